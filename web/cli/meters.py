"""`lipameter meter ACTION`: add, list, read the balance now, set the price, switch prepayment, clear, set the
low-balance alert threshold.
Each change names who did it (`--by`, default $USER) and is written to the audit log."""

from __future__ import annotations

import argparse

from core.admin.operator import Actor, meter_command, read_balance
from core.admin.registry import AddMeter, list_meters, register_meter
from core.usage.service import set_meter_threshold
from web.cli.common import by_option, cli_actor, fail, run_with_container


def cmd_meter_add(args: argparse.Namespace) -> None:
    command = AddMeter(number=args.number, name=args.name, device_id=args.device_id, profile=args.profile,
                       price_per_kwh=args.price)
    meter = run_with_container(lambda c: register_meter(command, uow=c.uow(), meters=c.meter_gateway,
                                                        profiles=c.profiles, clock=c.clock, actor=cli_actor(args)),
                               need_tuya=True)
    dps = ", ".join(sorted(meter.dp_specs))
    print(f"added meter {meter.number} ({meter.name}), profile {meter.profile}, "
          f"{'online' if meter.online else 'offline'}; DPs: {dps}")
    print(meter.id)


def cmd_meter_list(args: argparse.Namespace) -> None:
    meters = run_with_container(lambda c: list_meters(uow=c.uow()))
    if not meters:
        print("no meters yet: lipameter meter add --number N --name NAME --device-id ID")
        return
    print(f"{'NUMBER':<12} {'NAME':<24} {'DEVICE':<24} {'PROFILE':<14} {'PRICE':>8} {'ACTIVE':<6} ID")
    for m in meters:
        price = f"{m.price_per_kwh:.2f}" if m.price_per_kwh is not None else "-"
        print(f"{m.number:<12} {m.name[:24]:<24} {m.device_id[:24]:<24} {m.profile:<14} {price:>8} "
              f"{'yes' if m.active else 'no':<6} {m.id}")


def cmd_meter_balance(args: argparse.Namespace) -> None:
    meter, reading = run_with_container(lambda c: read_balance(
        args.number, uow=c.uow(), meters=c.meter_gateway, profiles=c.profiles, clock=c.clock), need_tuya=True)
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


def _meter_command(args: argparse.Namespace, operation: str, value: object, done: str) -> None:
    run_with_container(lambda c: meter_command(
        args.number, operation, value, actor=Actor(cli_actor(args)), reason=getattr(args, "reason", None),
        uow=c.uow(), meters=c.meter_gateway, profiles=c.profiles, clock=c.clock), need_tuya=True)
    print(done)


def cmd_meter_price(args: argparse.Namespace) -> None:
    _meter_command(args, "set_price", args.price, f"meter {args.number}: price set to KES {args.price} per kWh")


def cmd_meter_prepayment(args: argparse.Namespace) -> None:
    _meter_command(args, "prepayment_switch", args.state == "on", f"meter {args.number}: prepayment {args.state}")


def cmd_meter_clear(args: argparse.Namespace) -> None:
    if not args.yes:
        fail(f"clearing erases the energy balance of meter {args.number}; add --yes to do it")
    _meter_command(args, "clear", True, f"meter {args.number}: energy balance cleared")


def cmd_meter_threshold(args: argparse.Namespace) -> None:
    meter, threshold = run_with_container(lambda c: set_meter_threshold(
        args.number, args.value, actor=cli_actor(args), uow=c.uow(), clock=c.clock))
    said = f"{threshold}" if threshold is not None else "auto (about two days of its own use)"
    print(f"meter {meter.number}: low-balance threshold {said}")


def add_parser(sub) -> None:
    meter = sub.add_parser("meter", help="meters").add_subparsers(dest="meter_command", required=True, metavar="ACTION")
    by = by_option()

    add = meter.add_parser("add", help="register a meter; prints its id last")
    add.add_argument("--number", required=True, help="the short code printed on the unit (<= 12 characters)")
    add.add_argument("--name", required=True)
    add.add_argument("--device-id", required=True, help="the Tuya device id")
    add.add_argument("--profile", default="seed", help="meter profile (seed, tuya-standard, or from config)")
    add.add_argument("--price", default=None, help="KES per kWh")
    add.set_defaults(func=cmd_meter_add)
    meter.add_parser("list", help="list meters").set_defaults(func=cmd_meter_list)

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
    threshold = meter.add_parser("threshold", parents=[by], help="set the low-balance alert threshold")
    threshold.add_argument("number")
    threshold.add_argument("value", metavar="VALUE", help="in the meter's unit (KES or kWh), or 'auto'")
    threshold.set_defaults(func=cmd_meter_threshold)
