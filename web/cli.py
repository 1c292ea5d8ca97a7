"""`lipameter`: the command line. User mistakes are one clear line on stderr and exit code 2;
upstream or database trouble exits 1. Never a traceback for a user mistake."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from core.shared.errors import DomainError
from web.cli_common import CliError, configure_logging, fail, load_settings

log = logging.getLogger("lipameter.cli")


def cli_actor(args) -> str:
    import getpass

    return getattr(args, "by", None) or getpass.getuser() or "cli"


def cmd_migrate(args) -> None:
    from storage.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    print("database is up to date")


def cmd_serve(args) -> None:
    import uvicorn

    from web.app import create_app
    from web.serving import uvicorn_options

    settings = load_settings()
    missing = settings.missing_for_serve()
    if missing:
        fail("cannot serve: missing " + ", ".join(missing) + " (set them in the environment or .env; "
             "`lipameter demo` runs with the sandbox instead)")
    _check_telegram_secret(settings)
    configure_logging(settings.log_level)
    if not settings.ussd_allowed_ips:
        log.warning("USSD_ALLOWED_IPS is empty: anyone who finds /ussd can post hops as any phone; "
                    "set it to Africa's Talking's addresses")
    uvicorn.run(create_app(settings, run_worker=not args.no_worker), host=args.host, port=args.port,
                # No access log: its lines carry CALLBACK_TOKEN (in the callback path) and phone filters.
                log_level=settings.log_level.lower(), proxy_headers=False, access_log=False,
                **uvicorn_options(settings))  # header and keep-alive timeouts, a connection limit


def _check_telegram_secret(settings) -> None:
    import re

    # Without it anyone could post updates to the webhook as any Telegram user; Telegram's own rule.
    secret = settings.telegram_webhook_secret.get_secret_value()
    if settings.telegram_bot_token.get_secret_value() and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
        fail("TELEGRAM_WEBHOOK_SECRET must be set with TELEGRAM_BOT_TOKEN: 1-256 characters of A-Z a-z 0-9 _ -")


def cmd_bot(args) -> None:
    """`lipameter bot --polling`: the bot without a public URL (getUpdates), with the worker unless --no-worker."""
    from telegram.error import InvalidToken, TelegramError

    from bot.conversation import Conversation
    from bot.runtime import build_application, poll
    from web.app import telegram_deps
    from web.services import build_services, build_worker

    if not args.polling:
        fail("`lipameter serve` runs the bot through its webhook; `lipameter bot --polling` is for a machine "
             "Telegram cannot reach")
    settings = load_settings()
    token = settings.telegram_bot_token.get_secret_value()
    if not token:
        fail("cannot run the bot: missing TELEGRAM_BOT_TOKEN")
    configure_logging(settings.log_level)

    async def run() -> None:
        import signal

        services, stop = build_services(settings), asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        application = build_application(token, Conversation(telegram_deps(services)),
                                        api_base=settings.telegram_api_base, polling=True)
        jobs = [poll(application, stop)] + ([] if args.no_worker else [build_worker(services).run(stop)])
        try:
            await asyncio.gather(*jobs)
        finally:
            stop.set()
            await services.aclose()

    try:
        asyncio.run(run())
    except InvalidToken:  # its message quotes the token: never shown
        fail("Telegram rejected TELEGRAM_BOT_TOKEN", exit_code=1)
    except TelegramError as error:
        fail(f"could not start the bot: Telegram answered {type(error).__name__}", exit_code=1)


def cmd_worker(args) -> None:
    from web.services import build_services, build_worker

    settings = load_settings()
    missing = settings.missing_for_serve()
    if missing:
        fail("cannot run the worker: missing " + ", ".join(missing))
    configure_logging(settings.log_level)

    async def run() -> None:
        services = build_services(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await build_worker(services).run(stop)
        finally:
            await services.aclose()

    asyncio.run(run())


def cmd_demo(args) -> None:
    from web.demo import run_demo

    run_demo(host=args.host, port=args.port, database_url=args.database_url)


def cmd_meter_add(args) -> None:
    from core.admin.registry import AddMeter, register_meter
    from web.cli_ops import run_with_services

    command = AddMeter(number=args.number, name=args.name, device_id=args.device_id, profile=args.profile,
                       price_per_kwh=args.price)
    meter = run_with_services(lambda s: register_meter(command, uow=s.uow(), meters=s.meter_gateway,
                                                       profiles=s.profiles, clock=s.clock, actor=cli_actor(args)),
                              need_tuya=True)
    dps = ", ".join(sorted(meter.dp_specs))
    print(f"added meter {meter.number} ({meter.name}), profile {meter.profile}, "
          f"{'online' if meter.online else 'offline'}; DPs: {dps}")
    print(meter.id)


def cmd_meter_list(args) -> None:
    from core.admin.registry import list_meters

    from web.cli_ops import run_with_services

    meters = run_with_services(lambda s: list_meters(uow=s.uow()))
    if not meters:
        print("no meters yet: lipameter meter add --number N --name NAME --device-id ID")
        return
    print(f"{'NUMBER':<12} {'NAME':<24} {'DEVICE':<24} {'PROFILE':<14} {'PRICE':>8} {'ACTIVE':<6} ID")
    for m in meters:
        price = f"{m.price_per_kwh:.2f}" if m.price_per_kwh is not None else "-"
        print(f"{m.number:<12} {m.name[:24]:<24} {m.device_id[:24]:<24} {m.profile:<14} {price:>8} "
              f"{'yes' if m.active else 'no':<6} {m.id}")


def cmd_tenant_add(args) -> None:
    from core.admin.registry import AddTenant, add_tenant

    from web.cli_ops import run_with_services

    tenant = run_with_services(lambda s: add_tenant(
        AddTenant(phone=args.phone, name=args.name or "", meter_numbers=args.meter or []), uow=s.uow(),
        actor=cli_actor(args)))
    print(f"tenant {tenant.phone} ready with meter(s): {', '.join(args.meter or []) or 'none'}")
    print(tenant.id)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipameter", description="Prepaid electricity paid with M-Pesa.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="create or upgrade the database").set_defaults(func=cmd_migrate)

    serve = sub.add_parser("serve", help="run the web app (and the worker unless --no-worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="run jobs in a separate `lipameter worker`")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("worker", help="run the job worker and the reconcile sweep").set_defaults(func=cmd_worker)

    bot = sub.add_parser("bot", help="run the Telegram bot by polling (no public URL needed), with the worker")
    bot.add_argument("--polling", action="store_true", help="fetch updates with getUpdates instead of the webhook")
    bot.add_argument("--no-worker", action="store_true", help="run jobs in a separate `lipameter worker`")
    bot.set_defaults(func=cmd_bot)

    demo = sub.add_parser("demo", help="everything on one machine: SQLite, the sandbox, demo meters")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--database-url", default=None, help="default: sqlite+aiosqlite:///./lipameter-demo.db")
    demo.set_defaults(func=cmd_demo)

    meter = sub.add_parser("meter", help="meters").add_subparsers(dest="meter_command", required=True, metavar="ACTION")
    add = meter.add_parser("add", help="register a meter; prints its id last")
    add.add_argument("--number", required=True, help="the short code printed on the unit (<= 12 characters)")
    add.add_argument("--name", required=True)
    add.add_argument("--device-id", required=True, help="the Tuya device id")
    add.add_argument("--profile", default="seed", help="meter profile (seed, tuya-standard, or from config)")
    add.add_argument("--price", default=None, help="KES per kWh")
    add.set_defaults(func=cmd_meter_add)
    meter.add_parser("list", help="list meters").set_defaults(func=cmd_meter_list)

    tenant = sub.add_parser("tenant", help="tenants").add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    tadd = tenant.add_parser("add", help="add a tenant (or link more meters to one)")
    tadd.add_argument("--phone", required=True)
    tadd.add_argument("--name", default="")
    tadd.add_argument("--meter", action="append", metavar="NUMBER", help="a meter number the tenant may pick; repeatable")
    tadd.set_defaults(func=cmd_tenant_add)

    from web import cli_ops, dial

    cli_ops.add_parsers(sub, meter)
    dial.add_parser(sub)
    from web.admin import cli as admin_cli

    admin_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("serve", "worker", "demo", "bot"):
        # One-shot commands answer in one line; the services' own warnings would only repeat it.
        logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except CliError as error:
        print(f"lipameter: {error}", file=sys.stderr)
        return error.exit_code
    except DomainError as error:
        print(f"lipameter: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        print(f"lipameter: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
