"""`lipameter demo`: the whole product on one machine (what it seeds and mounts: web/demo.py)."""

from __future__ import annotations

import argparse
import asyncio

import uvicorn

from storage.migrate import upgrade
from web.app import create_app
from web.bootstrap import build_container
from web.cli.common import configure_logging
from web.demo import DEMO_API_KEY, demo_c2b, demo_settings, demo_tuya, how_to, sandbox_mounts, seed_demo_data
from web.demo_history import start_history


def run_demo(*, host: str = "127.0.0.1", port: int = 8000, database_url: str | None = None) -> None:
    settings = demo_settings(host=host, port=port, database_url=database_url)
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    tuya_app = demo_tuya()
    container = build_container(settings)
    has_payments = asyncio.run(seed_demo_data(container, tuya_app))
    mounts = sandbox_mounts(tuya_app, base_url=settings.public_base_url, sms_report_url=settings.sms_report_url)
    app = create_app(container, extra_routes=mounts)
    print(how_to(settings), flush=True)
    if not has_payments:
        print("Making a little history now: 5 payments through the sandbox (one by Paybill 600000); the top-up on "
              "A102 fails on purpose.\n"
              "Find it on the dashboard (Overview -> Top-ups failed -> the payment) and press \"Retry top-up\".\n",
              flush=True)
    start_history(settings.public_base_url, DEMO_API_KEY, database_has_payments=has_payments, c2b=demo_c2b(settings))
    uvicorn.run(app, host=host, port=port, log_level="warning")


def cmd_demo(args: argparse.Namespace) -> None:
    run_demo(host=args.host, port=args.port, database_url=args.database_url)


def add_parser(sub) -> None:
    demo = sub.add_parser("demo", help="everything on one machine: SQLite, the sandbox, demo meters")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--database-url", default=None, help="default: sqlite+aiosqlite:///./lipameter-demo.db")
    demo.set_defaults(func=cmd_demo)
