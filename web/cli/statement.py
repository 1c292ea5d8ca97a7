"""`lipameter statement --month 2026-11 [--meter N] --format pdf|csv [--out FILE]`: a landlord's monthly
statement, for one meter or the whole property. CSV goes to stdout without --out; a PDF needs --out."""

from __future__ import annotations

import sys
from pathlib import Path

from core.shared.clock import NAIROBI
from core.statements.model import Statement, parse_month
from storage.statements import monthly_statement
from web.bootstrap import Container
from web.cli.common import fail, run_with_container
from web.statements import statement_csv, statement_pdf


def cmd_statement(args) -> None:
    if args.format == "pdf" and not args.out:
        fail("a PDF needs --out FILE (only CSV can go to the terminal)")

    async def make(container: Container) -> Statement:
        now = container.clock.now()
        month = parse_month(args.month, today=now.astimezone(NAIROBI).date())
        return await monthly_statement(container.engine, month, profiles=container.profiles, made_at=now,
                                       meter_number=args.meter)

    statement = run_with_container(make)
    if args.format == "csv" and not args.out:
        sys.stdout.write(statement_csv(statement))
        return
    body = statement_pdf(statement) if args.format == "pdf" else statement_csv(statement).encode("utf-8")
    Path(args.out).write_bytes(body)
    print(f"statement {statement.month} for {'the whole property' if statement.whole_property else 'meter ' + args.meter}"
          f" written to {args.out}" + (" (no data that month)" if statement.empty else ""))


def add_parser(sub) -> None:
    parser = sub.add_parser("statement", help="a monthly statement (CSV or PDF), per meter or for the property")
    parser.add_argument("--month", required=True, help="the calendar month in Nairobi time, e.g. 2026-11")
    parser.add_argument("--meter", default=None, help="one meter's number (default: every meter)")
    parser.add_argument("--format", choices=("csv", "pdf"), default="csv")
    parser.add_argument("--out", default=None, help="write to this file (default for CSV: stdout)")
    parser.set_defaults(func=cmd_statement)
