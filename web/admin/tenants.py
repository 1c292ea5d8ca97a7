"""Tenants: who they are, which meters they see in their menus, Telegram linked or not, what they paid."""

from __future__ import annotations

from starlette.responses import Response

from core.admin.registry import AddTenant, add_tenant
from core.shared.errors import DomainError
from core.tenants.links import link_meter, unlink_meter
from storage.dashboard import list_tenants, tenant_detail
from web.admin.forms import FormError, required, text
from web.admin.site import Ctx, not_found
from web.http import domain_status


async def tenants_page(ctx: Ctx, *, status: int = 200, error: str | None = None,
                       values: dict | None = None) -> Response:
    tenants = await list_tenants(ctx.container.engine)
    return ctx.render("admin/tenants.html", status, title="Tenants", tenants=tenants, error=error, values=values or {})


async def add(ctx: Ctx) -> Response:
    values = {name: text(ctx.form, name, limit=120) for name in ("phone", "name", "meters")}
    numbers = [n.strip() for n in values["meters"].replace(",", " ").split() if n.strip()]
    try:
        required(ctx.form, "phone", "the phone number")
        tenant = await add_tenant(AddTenant(phone=values["phone"], name=values["name"], meter_numbers=numbers),
                                  uow=ctx.container.uow(), clock=ctx.container.clock, actor=ctx.user.username)
    except FormError as error:
        return await tenants_page(ctx, status=error.status, error=error.message, values=values)
    except DomainError as error:
        return await tenants_page(ctx, status=domain_status(error), error=error.message, values=values)
    return ctx.redirect(f"/admin/tenants/{tenant.id}", f"Tenant {tenant.phone} saved.")


async def tenant_page(ctx: Ctx, *, status: int = 200, error: str | None = None) -> Response:
    tenant = await tenant_detail(ctx.container.engine, ctx.request.path_params["tenant_id"])
    if tenant is None:
        raise not_found("tenant with that id")
    return ctx.render("admin/tenant.html", status, title=f"Tenant {tenant['phone']}", tenant=tenant, error=error)


async def _link(ctx: Ctx, use_case, done: str) -> Response:
    tenant_id = ctx.request.path_params["tenant_id"]
    if await tenant_detail(ctx.container.engine, tenant_id, limit=1) is None:
        raise not_found("tenant with that id")
    number = text(ctx.form, "meter", limit=12)
    try:
        if not number:
            raise FormError("choose a meter number")
        await use_case(tenant_id, number, actor=ctx.user.username, uow=ctx.container.uow(), clock=ctx.container.clock)
    except FormError as error:
        return await tenant_page(ctx, status=error.status, error=error.message)
    except DomainError as error:
        return await tenant_page(ctx, status=domain_status(error), error=error.message)
    return ctx.redirect(f"/admin/tenants/{tenant_id}", done.format(number=number))


async def link(ctx: Ctx) -> Response:
    return await _link(ctx, link_meter, "Meter {number} linked: it now shows in the tenant's menus.")


async def unlink(ctx: Ctx) -> Response:
    return await _link(ctx, unlink_meter, "Meter {number} unlinked from the tenant's menus.")
