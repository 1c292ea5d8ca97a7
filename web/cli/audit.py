"""`lipameter audit [--json]`: check the books' invariants; exit status 1 when one is violated."""

from __future__ import annotations

import asyncio
import json

from core.audit.checks import AuditReport, audit, summary_line
from core.shared.clock import SystemClock
from storage.db import create_engine
from storage.integrity import read_facts
from web.cli.common import load_settings


async def run_audit(database_url: str) -> AuditReport:
    engine = create_engine(database_url)
    try:
        return audit(await read_facts(engine, now=SystemClock().now()))
    finally:
        await engine.dispose()


def report_json(report: AuditReport) -> str:
    return json.dumps({"ok": report.ok, "totals": {k: str(v) for k, v in vars(report.totals).items()},
                       "violations": len(report.violations),
                       "findings": [finding.as_dict() for finding in report.findings]}, indent=2)


def report_text(report: AuditReport) -> str:
    lines = [summary_line(report)]
    lines += [f"{f.severity.upper():9} {f.check:22} {f.subject}: {f.detail}" for f in report.findings]
    return "\n".join(lines)


def cmd_audit(args) -> int:
    report = asyncio.run(run_audit(load_settings().database_url))
    print(report_json(report) if args.json else report_text(report))
    return 0 if report.ok else 1


def add_parser(sub) -> None:
    parser = sub.add_parser("audit", help="check the books: credited <= paid, one top-up per payment, ...")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_audit)
