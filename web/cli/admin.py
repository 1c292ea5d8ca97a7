"""`lipameter admin create --username U [--role admin|viewer] [--password-stdin]`: a dashboard login;
`admin password` (a new one, ending the user's sessions), `admin role`, `admin disable` (no more logins,
sessions ended). Passwords come from a prompt (typed twice, not echoed) or the first line of stdin, never argv."""

from __future__ import annotations

import argparse
import getpass
import sys

from core.admin.auth import change_password, change_role, create_admin_user, disable_user
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


def _run_on_users(args: argparse.Namespace, change):
    """Runs `change(users, now, actor)` against the configured database; a DomainError exits 2 (cli main)."""
    return run_with_container(lambda c: change(c.admin_users, c.clock.now(), cli_actor(args)))


def cmd_admin_password(args) -> None:
    password = _read_password(args)
    name = _run_on_users(args, lambda users, now, actor: change_password(args.username, password, users=users,
                                                                         now=now, actor=actor))
    print(f"dashboard user {name}: password changed; their open sessions are ended")


def cmd_admin_role(args) -> None:
    name = _run_on_users(args, lambda users, now, actor: change_role(args.username, args.role, users=users, now=now,
                                                                     actor=actor))
    print(f"dashboard user {name} is now {args.role}")


def cmd_admin_disable(args) -> None:
    name = _run_on_users(args, lambda users, now, actor: disable_user(args.username, users=users, now=now,
                                                                      actor=actor))
    print(f"dashboard user {name} disabled; their open sessions are ended")


def add_parser(sub) -> None:
    admin = sub.add_parser("admin", help="dashboard users").add_subparsers(dest="admin_command", required=True,
                                                                          metavar="ACTION")
    create = admin.add_parser("create", help="add a dashboard login (password from a prompt or --password-stdin)")
    create.add_argument("--username", required=True)
    create.add_argument("--role", choices=["admin", "viewer"], default="admin",
                        help="admin: everything; viewer: read only (default admin)")
    create.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    create.set_defaults(func=cmd_admin_create)
    password = admin.add_parser("password", help="set a new password (prompt or --password-stdin); ends their sessions")
    password.add_argument("--username", required=True)
    password.add_argument("--password-stdin", action="store_true",
                          help="read the password from the first line of stdin")
    password.set_defaults(func=cmd_admin_password)
    role = admin.add_parser("role", help="make a user admin or viewer")
    role.add_argument("--username", required=True)
    role.add_argument("--role", choices=["admin", "viewer"], required=True)
    role.set_defaults(func=cmd_admin_role)
    disable = admin.add_parser("disable", help="refuse the user's logins and end their sessions")
    disable.add_argument("--username", required=True)
    disable.set_defaults(func=cmd_admin_disable)
