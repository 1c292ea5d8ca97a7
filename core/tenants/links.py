"""Which meters a tenant sees in the USSD and Telegram menus: link and unlink, audited.
(Anyone may still pay for any active meter by its number; a link only puts it in the menus.)"""

from __future__ import annotations

from core.meters.model import Meter
from core.ports import Clock, UnitOfWork
from core.shared.errors import NotFound
from core.tenants.model import Tenant


async def _tenant_and_meter(uow: UnitOfWork, tenant_id: str, meter_number: str) -> tuple[Tenant, Meter]:
    tenant = await uow.tenants.get(tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}", code="tenant_not_found")
    meter = await uow.meters.get_by_number((meter_number or "").strip())
    if meter is None:
        raise NotFound(f"no meter with number {meter_number!r}", code="meter_not_found")
    return tenant, meter


async def link_meter(tenant_id: str, meter_number: str, *, actor: str, uow: UnitOfWork, clock: Clock) -> Meter:
    async with uow:
        tenant, meter = await _tenant_and_meter(uow, tenant_id, meter_number)
        await uow.tenants.link(tenant.id, meter.id)
        await uow.audit.record(at=clock.now(), actor=actor, action="link_meter", target=tenant.phone,
                               reason=None, details={"meter": meter.number, "tenant_id": tenant.id})
        await uow.commit()
    return meter


async def unlink_meter(tenant_id: str, meter_number: str, *, actor: str, uow: UnitOfWork, clock: Clock) -> Meter:
    async with uow:
        tenant, meter = await _tenant_and_meter(uow, tenant_id, meter_number)
        if not await uow.tenants.unlink(tenant.id, meter.id):
            raise NotFound(f"meter {meter.number} is not linked to {tenant.phone}", code="link_not_found")
        await uow.audit.record(at=clock.now(), actor=actor, action="unlink_meter", target=tenant.phone,
                               reason=None, details={"meter": meter.number, "tenant_id": tenant.id})
        await uow.commit()
    return meter
