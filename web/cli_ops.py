"""Operator commands: manual and retried top-ups, reviews, live meter reads and meter settings.
Each admin action names who did it (`--by`, default $USER) and is written to the audit log."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from typing import Any, Awaitable, Callable

from core.admin.operator import (
    Actor, list_reviews, manual_topup, meter_command, read_balance, resolve_review, retry_topup,
)
from core.topups.model import TopUpStatus
from core.jobs.worker import RetryLater


def _actor(args) -> Actor:
    return Actor(args.by or getpass.getuser() or "cli")


def run_with_services(fn: Callable[[Any], Awaitable[Any]], *, need_tuya: bool = False) -> Any:
    from web.cli_common import fail, load_settings
    from web.services import build_services

    settings = load_settings()
    if need_tuya and not settings.tuya_enabled:
        fail("this needs the Tuya cloud: set TUYA_ENDPOINT, TUYA_ACCESS_ID and TUYA_ACCESS_SECRET")

    async def go():
        services = build_services(settings)
        try:
            return await fn(services)
        finally:
            await services.aclose()

    return asyncio.run(go())


async def _apply_now(services, topup_id: str) -> TopUpStatus | str:
    """Run one attempt here so the operator sees the outcome; the worker takes over on a retry."""
    if services.meter_gateway is None:
        return "queued (no Tuya settings here: a worker will apply it)"
    try:
        return await services.topup_engine().run(topup_id)
    except RetryLater as later:
        return f"not applied yet ({later}); the worker retries in {later.delay_s:.0f}s"


def cmd_topup(args) -> None:
    if getattr(args, "topup_command", None) == "retry":
        return cmd_topup_retry(args)
    from web.cli_common import fail

    if not (args.meter and args.amount and args.reason):
        fail("usage: lipameter topup --meter N --amount KES --reason TEXT  (or: lipameter topup retry PAYMENT_ID --reason TEXT)")

    async def go(services):
        topup = await manual_topup(args.meter, args.amount, args.reason, actor=_actor(args), uow=services.uow(),
                                   profiles=services.profiles, clock=services.clock)
        return topup, await _apply_now(services, topup.id)

    topup, outcome = run_with_services(go)
    print(f"manual top-up {topup.id}: KES {topup.amount} for meter {args.meter}: "
          f"{outcome.value if isinstance(outcome, TopUpStatus) else outcome}")


def cmd_topup_retry(args) -> None:
    async def go(services):
        topup = await retry_topup(args.ref, args.reason or "retried from the command line", actor=_actor(args),
                                  uow=services.uow(), clock=services.clock)
        return topup, await _apply_now(services, topup.id)

    topup, outcome = run_with_services(go)
    print(f"top-up {topup.id} retried: {outcome.value if isinstance(outcome, TopUpStatus) else outcome}")


def cmd_review_list(args) -> None:
    items = run_with_services(lambda services: list_reviews(uow=services.uow()))
    if not items:
        print("nothing waits for review")
        return
    for item in items:
        print(f"{item.kind:<8} {item.id}  KES {item.amount:>10}  since {item.since:%Y-%m-%d %H:%M} UTC  {item.reason}")


def cmd_review_resolve(args) -> None:
    action = run_with_services(lambda services: resolve_review(
        args.ref, args.reason, action=args.action, actor=_actor(args), uow=services.uow(), clock=services.clock))
    print(f"{args.ref} resolved: {action}")


def cmd_meter_balance(args) -> None:
    meter, reading = run_with_services(lambda s: read_balance(
        args.number, uow=s.uow(), meters=s.meter_gateway, profiles=s.profiles, clock=s.clock), need_tuya=True)
    parts = [f"meter {meter.number} ({meter.name})"]
    if reading.money_balance is not None:
        parts.append(f"balance KES {reading.money_balance:,}")
    if reading.energy_balance is not None:
        parts.append(f"energy {reading.energy_balance} kWh")
    if reading.purchase_total is not None:
        parts.append(f"bought {reading.purchase_total} kWh")
    if reading.consumption_total is not None:
        parts.append(f"used {reading.consumption_total} kWh")
    if reading.prepayment is not None:
        parts.append(f"prepayment {'on' if reading.prepayment else 'off'}")
    print(", ".join(parts))


def _meter_command(args, operation: str, value: object, done: str) -> None:
    run_with_services(lambda s: meter_command(
        args.number, operation, value, actor=_actor(args), reason=getattr(args, "reason", None), uow=s.uow(),
        meters=s.meter_gateway, profiles=s.profiles, clock=s.clock), need_tuya=True)
    print(done)


def cmd_meter_price(args) -> None:
    _meter_command(args, "set_price", args.price, f"meter {args.number}: price set to KES {args.price} per kWh")


def cmd_meter_prepayment(args) -> None:
    _meter_command(args, "prepayment_switch", args.state == "on", f"meter {args.number}: prepayment {args.state}")


def cmd_meter_clear(args) -> None:
    from web.cli_common import fail

    if not args.yes:
        fail(f"clearing erases the energy balance of meter {args.number}; add --yes to do it")
    _meter_command(args, "clear", True, f"meter {args.number}: energy balance cleared")


def add_parsers(sub, meter) -> None:
    """Registers `topup`, `review` and the meter commands on the CLI's parsers."""
    by = argparse.ArgumentParser(add_help=False)
    by.add_argument("--by", default=None, help="who is acting (default: $USER); written to the audit log")

    topup = sub.add_parser("topup", parents=[by], help="credit a meter by hand (audited), or retry a failed top-up")
    topup.add_argument("--meter")
    topup.add_argument("--amount", help="KES")
    topup.add_argument("--reason")
    topup.set_defaults(func=cmd_topup)
    topup_sub = topup.add_subparsers(dest="topup_command", required=False, metavar="[retry]")
    retry = topup_sub.add_parser("retry", parents=[by], help="send a failed top-up again")
    retry.add_argument("ref", metavar="PAYMENT_ID", help="a payment id or a top-up id")
    retry.add_argument("--reason")
    retry.set_defaults(func=cmd_topup)

    review = sub.add_parser("review", help="payments and top-ups waiting for a person").add_subparsers(
        dest="review_command", required=True, metavar="ACTION")
    review.add_parser("list", help="what waits for review").set_defaults(func=cmd_review_list)
    resolve = review.add_parser("resolve", parents=[by], help="close a review with a reason")
    resolve.add_argument("ref", metavar="ID")
    resolve.add_argument("--reason", required=True)
    resolve.add_argument("--action", default="dismiss",
                         help="payment: credit|dismiss; top-up: applied|retry|dismiss; unmatched callback: "
                              "dismiss (default dismiss)")
    resolve.set_defaults(func=cmd_review_resolve)

    balance = meter.add_parser("balance", help="read the meter's balance now")
    balance.add_argument("number")
    balance.set_defaults(func=cmd_meter_balance)
    price = meter.add_parser("price", parents=[by], help="set the price per kWh on the meter")
    price.add_argument("number")
    price.add_argument("price", metavar="KES_PER_KWH")
    price.set_defaults(func=cmd_meter_price)
    prepay = meter.add_parser("prepayment", parents=[by], help="switch prepayment mode")
    prepay.add_argument("number")
    prepay.add_argument("state", choices=["on", "off"])
    prepay.set_defaults(func=cmd_meter_prepayment)
    clear = meter.add_parser("clear", parents=[by], help="clear the meter's energy balance")
    clear.add_argument("number")
    clear.add_argument("--yes", action="store_true", help="really clear it")
    clear.set_defaults(func=cmd_meter_clear)
