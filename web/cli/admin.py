"""`lipameter admin create --username U [--role admin|viewer] [--password-stdin]`: a dashboard login.
The password comes from a prompt (typed twice, not echoed) or the first line of stdin, never argv."""

from __future__ import annotations

import argparse
import getpass
import sys

from core.admin.auth import create_admin_user
from web.cli.common import cli_actor, fail, load_settings, run_with_container


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            fail("no terminal to ask for the password on: use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            fail("the two passwords differ")
    return password


def cmd_admin_create(args: argparse.Namespace) -> None:
    load_settings()  # a configuration mistake is reported before the password is asked for
    password = _read_password(args)
    user = run_with_container(lambda c: create_admin_user(args.username, password, args.role, users=c.admin_users,
                                                          now=c.clock.now(), actor=cli_actor(args)))
    print(f"dashboard user {user.username} ({user.role.value}) created; log in at /admin")


def add_parser(sub) -> None:
    admin = sub.add_parser("admin", help="dashboard users").add_subparsers(dest="admin_command", required=True,
                                                                          metavar="ACTION")
    create = admin.add_parser("create", help="add a dashboard login (password from a prompt or --password-stdin)")
    create.add_argument("--username", required=True)
    create.add_argument("--role", choices=["admin", "viewer"], default="admin",
                        help="admin: everything; viewer: read only (default admin)")
    create.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    create.set_defaults(func=cmd_admin_create)
