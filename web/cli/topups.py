"""Operator commands on money already paid: manual and retried top-ups, and the review queue.
Each action names who did it (`--by`, default $USER) and is written to the audit log."""

from __future__ import annotations

import argparse

from core.admin.operator import Actor, list_reviews, manual_topup, resolve_review, retry_topup
from core.jobs.worker import RetryLater
from core.topups.model import TopUpStatus
from web.bootstrap import Container
from web.cli.common import by_option, cli_actor, fail, run_with_container


async def _apply_now(container: Container, topup_id: str) -> TopUpStatus | str:
    """Run one attempt here so the operator sees the outcome; the worker takes over on a retry."""
    if container.topup_engine is None:
        return "queued (no Tuya settings here: a worker will apply it)"
    try:
        return await container.topup_engine.run(topup_id)
    except RetryLater as later:
        return f"not applied yet ({later}); the worker retries in {later.delay_s:.0f}s"


def _outcome(outcome: TopUpStatus | str) -> str:
    return outcome.value if isinstance(outcome, TopUpStatus) else outcome


def cmd_topup(args: argparse.Namespace) -> None:
    if getattr(args, "topup_command", None) == "retry":
        return cmd_topup_retry(args)
    if not (args.meter and args.amount and args.reason):
        fail("usage: lipameter topup --meter N --amount KES --reason TEXT  (or: lipameter topup retry PAYMENT_ID --reason TEXT)")

    async def go(container: Container):
        topup = await manual_topup(args.meter, args.amount, args.reason, actor=Actor(cli_actor(args)),
                                   uow=container.uow(), profiles=container.profiles, clock=container.clock)
        return topup, await _apply_now(container, topup.id)

    topup, outcome = run_with_container(go)
    print(f"manual top-up {topup.id}: KES {topup.amount} for meter {args.meter}: {_outcome(outcome)}")
    return None


def cmd_topup_retry(args: argparse.Namespace) -> None:
    async def go(container: Container):
        topup = await retry_topup(args.ref, args.reason or "retried from the command line",
                                  actor=Actor(cli_actor(args)), uow=container.uow(), clock=container.clock)
        return topup, await _apply_now(container, topup.id)

    topup, outcome = run_with_container(go)
    print(f"top-up {topup.id} retried: {_outcome(outcome)}")


def cmd_review_list(args: argparse.Namespace) -> None:
    items = run_with_container(lambda c: list_reviews(uow=c.uow()))
    if not items:
        print("nothing waits for review")
        return
    for item in items:
        print(f"{item.kind:<8} {item.id}  KES {item.amount:>10}  since {item.since:%Y-%m-%d %H:%M} UTC  {item.reason}")


def cmd_review_resolve(args: argparse.Namespace) -> None:
    if args.action == "assign" and not args.meter:
        fail("--action assign needs --meter NUMBER (the meter to credit)")
    action = run_with_container(lambda c: resolve_review(
        args.ref, args.reason, action=args.action, actor=Actor(cli_actor(args)), uow=c.uow(), clock=c.clock,
        meter=args.meter))
    print(f"{args.ref} resolved: {action}" + (f" to meter {args.meter}" if action == "assign" else ""))


def add_parsers(sub) -> None:
    """`topup` (and `topup retry`) and `review`."""
    by = by_option()
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
                              "dismiss; paid to an unknown account (c2b): assign --meter N|refund (default dismiss)")
    resolve.add_argument("--meter", help="with --action assign: the meter a payment to an unknown account credits")
    resolve.set_defaults(func=cmd_review_resolve)
