"""Who is calling (core.ports.CallerLookup): the tenant behind a phone and the meters linked to them.

Every input of every conversation reads it, so it is done the cheapest way that is still exact: outside
any transaction (two reads at most, each consistent on its own, as a landlord may link a meter between
two inputs anyway), and under a rush, for all the phones waiting at once (storage/batch.py).
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from core.meters.model import Meter
from core.tenants.model import Tenant
from storage.batch import MAX_BATCH, Coalescer, lanes_for, padded
from storage.db import one_statement
from storage.rows import from_row
from storage.tables import meter_access, meters, tenants

# Built once (see storage/rows.py).
_TENANTS = sa.select(tenants).where(tenants.c.phone.in_(sa.bindparam("phones", expanding=True)))
_METERS = (sa.select(meters, meter_access.c.tenant_id.label("linked_to"))
           .join(meter_access, meter_access.c.meter_id == meters.c.id)
           .where(meter_access.c.tenant_id.in_(sa.bindparam("tenant_ids", expanding=True)))
           .order_by(meters.c.number))


class SqlCallerLookup:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.lookups: Coalescer[str, tuple[Tenant | None, list[Meter]]] = Coalescer(
            self._lookup_batch, name="caller-lookups", max_batch=max_batch, lanes=lanes_for(engine.dialect.name))

    async def lookup(self, phone: str) -> tuple[Tenant | None, list[Meter]]:
        return await self.lookups(phone)

    async def _lookup_batch(self, phones: list[str]) -> list[tuple[Tenant | None, list[Meter]]]:
        async with one_statement(self.engine) as conn:
            found: dict[str, Tenant] = {}
            for row in await conn.execute(_TENANTS, {"phones": padded(sorted(set(phones)), conn.dialect.name)}):
                tenant = from_row(Tenant, row)
                found[tenant.phone] = tenant
            linked: dict[str, list[Meter]] = {tenant.id: [] for tenant in found.values()}
            if linked:  # most callers of a rush may be no tenant: no second read then
                for row in await conn.execute(_METERS, {"tenant_ids": padded(sorted(linked), conn.dialect.name)}):
                    linked[row.linked_to].append(from_row(Meter, row))
        # Each caller its own objects, as separate reads would have given them.
        return [(dataclasses.replace(found[phone]), [dataclasses.replace(m) for m in linked[found[phone].id]])
                if phone in found else (None, []) for phone in phones]
