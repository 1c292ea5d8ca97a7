"""`lipameter tenant add`: a tenant and the meters they may pick in their menus."""

from __future__ import annotations

import argparse

from core.admin.registry import AddTenant, add_tenant
from web.cli.common import cli_actor, run_with_container


def cmd_tenant_add(args: argparse.Namespace) -> None:
    tenant = run_with_container(lambda c: add_tenant(
        AddTenant(phone=args.phone, name=args.name or "", meter_numbers=args.meter or []), uow=c.uow(),
        actor=cli_actor(args)))
    print(f"tenant {tenant.phone} ready with meter(s): {', '.join(args.meter or []) or 'none'}")
    print(tenant.id)


def add_parser(sub) -> None:
    tenant = sub.add_parser("tenant", help="tenants").add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    tadd = tenant.add_parser("add", help="add a tenant (or link more meters to one)")
    tadd.add_argument("--phone", required=True)
    tadd.add_argument("--name", default="")
    tadd.add_argument("--meter", action="append", metavar="NUMBER", help="a meter number the tenant may pick; repeatable")
    tadd.set_defaults(func=cmd_tenant_add)
