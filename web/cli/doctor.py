"""`lipameter doctor`: the preflight for going live (the checks are in web/doctor.py)."""

from __future__ import annotations

import argparse

from web.cli.common import fail, load_settings
from web.doctor import doctor


def cmd_doctor(args: argparse.Namespace) -> None:
    failures = doctor(load_settings())
    if failures:
        fail(f"doctor: {failures} check(s) failed; fix them before going live", exit_code=1)


def add_parser(sub) -> None:
    sub.add_parser("doctor", help="preflight for going live: check every configured service").set_defaults(
        func=cmd_doctor)
