"""Who is calling (core.ports.CallerLookup): the tenant behind a phone and the meters linked to them.

Every input of every conversation reads it, so it is done the cheapest way that is still exact: outside
any transaction (two reads at most, each consistent on its own, as a landlord may link a meter between
two inputs anyway), and under a rush, for all the phones waiting at once (storage/batch.py).
"""

from __future__ import annotations

import dataclasses
import functools

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.meters.model import Meter
from core.tenants.model import Tenant
from storage.batch import MAX_BATCH, Coalescer, one_of, statement_batches
from storage.rows import from_row
from storage.tables import meter_access, meters, tenants


# Built once per dialect (see storage/rows.py).
@functools.cache
def _tenants(dialect: str) -> sa.Select:
    return sa.select(tenants).where(one_of(tenants.c.phone, "phones", dialect))


@functools.cache
def _meters(dialect: str) -> sa.Select:
    return (sa.select(meters, meter_access.c.tenant_id.label("linked_to"))
            .join(meter_access, meter_access.c.meter_id == meters.c.id)
            .where(one_of(meter_access.c.tenant_id, "tenant_ids", dialect))
            .order_by(meters.c.number))


class SqlCallerLookup:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = MAX_BATCH) -> None:
        self.lookups: Coalescer[str, tuple[Tenant | None, list[Meter]]] = statement_batches(
            _lookup_batch, engine, name="caller-lookups", max_batch=max_batch)

    async def lookup(self, phone: str) -> tuple[Tenant | None, list[Meter]]:
        return await self.lookups(phone)


async def _lookup_batch(phones: list[str], conn: AsyncConnection) -> list[tuple[Tenant | None, list[Meter]]]:
    """Outside any transaction (storage/db.py:one_statement): two reads at most, each consistent on its own."""
    dialect = conn.dialect.name
    found: dict[str, Tenant] = {}
    for row in await conn.execute(_tenants(dialect), {"phones": sorted(set(phones))}):
        tenant = from_row(Tenant, row)
        found[tenant.phone] = tenant
    linked: dict[str, list[Meter]] = {tenant.id: [] for tenant in found.values()}
    if linked:  # most callers of a rush may be no tenant: no second read then
        for row in await conn.execute(_meters(dialect), {"tenant_ids": sorted(linked)}):
            linked[row.linked_to].append(from_row(Meter, row))
    # Each caller its own objects, as separate reads would have given them.
    return [(dataclasses.replace(found[phone]), [dataclasses.replace(m) for m in linked[found[phone].id]])
            if phone in found else (None, []) for phone in phones]
