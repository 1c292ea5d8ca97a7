"""`lipameter`: the command line. Every command group is registered here, from one module each:
serve.py (migrate, serve, worker, bot), demo.py, meters.py, tenants.py, topups.py (topup, review),
dial.py, admin.py, doctor.py, audit.py, backup.py (backup, restore) and mpesa.py (register-urls).
User mistakes are one clear line on stderr and exit code 2; upstream or database trouble exits 1. Never a traceback for a user mistake."""

from __future__ import annotations

import argparse
import logging
import sys

from core.shared.errors import DomainError
from web.cli import admin, audit, backup, demo, dial, doctor, meters, mpesa, serve, tenants, topups
from web.cli.common import CliError

LONG_RUNNING = ("serve", "worker", "demo", "bot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipameter", description="Prepaid electricity paid with M-Pesa.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parsers(sub)  # migrate, serve, worker, bot
    demo.add_parser(sub)
    meters.add_parser(sub)
    tenants.add_parser(sub)
    topups.add_parsers(sub)  # topup, review
    dial.add_parser(sub)
    admin.add_parser(sub)
    doctor.add_parser(sub)
    audit.add_parser(sub)
    backup.add_parsers(sub)  # backup, restore
    mpesa.add_parser(sub)  # mpesa register-urls
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in LONG_RUNNING:
        # One-shot commands answer in one line; the container's own warnings would only repeat it.
        logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = args.func(args)  # None, or an exit status (audit: 1 on a violation)
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
    return status if isinstance(status, int) else 0
