"""Readings, daily roll-ups, alert settings and the shared call budget (issue 15), behind core's
UsageRepository port. Works on the unit of work's connection."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.usage.budget import Bucket, take
from core.usage.model import DailyUsage, MeterUsage, Reading, ReadingSource, TenantAlert
from storage.repositories import _Repository
from storage.rows import from_row, to_row
from storage.tables import (
    call_budgets,
    meter_access,
    meter_daily,
    meter_readings,
    meter_usage,
    meters,
    tenant_alerts,
    topups,
)


def _reading(row) -> Reading:
    return Reading(meter_id=row.meter_id, at=row.at, balance=row.balance, source=ReadingSource(row.source),
                   energy_total=row.energy_total, credit=row.credit)


class SqlUsageRepository(_Repository):
    # --- readings ----------------------------------------------------------------------------------
    async def add_reading(self, reading: Reading) -> None:
        await self.conn.execute(meter_readings.insert().values(
            meter_id=reading.meter_id, at=reading.at, balance=reading.balance, energy_total=reading.energy_total,
            credit=reading.credit, source=reading.source.value))

    async def readings(self, meter_id: str, *, since: datetime | None = None,
                       until: datetime | None = None) -> list[Reading]:
        query = sa.select(meter_readings).where(meter_readings.c.meter_id == meter_id)
        if since is not None:
            query = query.where(meter_readings.c.at >= since)
        if until is not None:
            query = query.where(meter_readings.c.at < until)
        rows = await self.conn.execute(query.order_by(meter_readings.c.at, meter_readings.c.id))
        return [_reading(row) for row in rows]

    async def prune_readings(self, meter_id: str, *, before: datetime) -> int:
        """Delete readings older than `before` but the newest of them (the next interval starts there)."""
        anchor = await self.conn.scalar(sa.select(sa.func.max(meter_readings.c.id)).where(
            meter_readings.c.meter_id == meter_id, meter_readings.c.at < before,
            meter_readings.c.balance.is_not(None)))
        query = meter_readings.delete().where(meter_readings.c.meter_id == meter_id, meter_readings.c.at < before)
        if anchor is not None:
            query = query.where(meter_readings.c.id != anchor)
        return (await self.conn.execute(query)).rowcount

    async def meters_with_readings_before(self, before: datetime) -> list[str]:
        rows = await self.conn.execute(sa.select(meter_readings.c.meter_id).where(meter_readings.c.at < before)
                                       .distinct())
        return [row.meter_id for row in rows]

    async def count_readings(self) -> int:
        return int(await self.conn.scalar(sa.select(sa.func.count()).select_from(meter_readings)))

    # --- daily roll-ups ----------------------------------------------------------------------------
    async def daily(self, meter_id: str, *, since: date | None = None, until: date | None = None) -> list[DailyUsage]:
        query = sa.select(meter_daily).where(meter_daily.c.meter_id == meter_id)
        if since is not None:
            query = query.where(meter_daily.c.day >= since)
        if until is not None:
            query = query.where(meter_daily.c.day < until)
        return [from_row(DailyUsage, row) for row in await self.conn.execute(query.order_by(meter_daily.c.day))]

    async def save_days(self, rows: list[DailyUsage]) -> None:
        for row in rows:
            await self.conn.execute(meter_daily.delete().where(meter_daily.c.meter_id == row.meter_id,
                                                               meter_daily.c.day == row.day))
            await self.conn.execute(meter_daily.insert().values(**to_row(row, meter_daily)))

    # --- per meter settings and schedule -------------------------------------------------------------
    async def meter(self, meter_id: str) -> MeterUsage:
        row = (await self.conn.execute(sa.select(meter_usage).where(meter_usage.c.meter_id == meter_id))).first()
        return from_row(MeterUsage, row) or MeterUsage(meter_id)

    async def save_meter(self, usage: MeterUsage) -> None:
        values = to_row(usage, meter_usage)
        updated = await self.conn.execute(meter_usage.update().where(meter_usage.c.meter_id == usage.meter_id)
                                          .values(**values))
        if updated.rowcount == 0:
            await self._insert(meter_usage, values, "meter usage row exists", "meter_usage_exists")

    async def due_meters(self, now: datetime, *, limit: int, first_after: datetime | None = None) -> list[str]:
        """Active meters whose next read is due, the most overdue first. A meter never sampled is due once
        it was created before `first_after` (registering it read it already)."""
        first_after = first_after or now
        due = sa.or_(meter_usage.c.next_read_at <= now,
                     sa.and_(meter_usage.c.next_read_at.is_(None), meters.c.created_at <= first_after))
        order = sa.func.coalesce(meter_usage.c.next_read_at, meters.c.created_at)
        query = (sa.select(meters.c.id).select_from(meters.outerjoin(meter_usage, meter_usage.c.meter_id == meters.c.id))
                 .where(meters.c.active.is_(True), due).order_by(order, meters.c.id).limit(limit))
        return [row.id for row in await self.conn.execute(query)]

    async def topup_in_flight(self, meter_id: str) -> bool:
        """A charge is being sent or confirmed: a reading now could see it before its top-up reading."""
        count = await self.conn.scalar(sa.select(sa.func.count()).select_from(topups).where(
            topups.c.meter_id == meter_id, topups.c.status == "sending"))
        return bool(count)

    # --- tenants' alerts ---------------------------------------------------------------------------
    async def tenants_of(self, meter_id: str) -> list[str]:
        rows = await self.conn.execute(sa.select(meter_access.c.tenant_id).where(meter_access.c.meter_id == meter_id)
                                       .order_by(meter_access.c.tenant_id))
        return [row.tenant_id for row in rows]

    async def alert(self, tenant_id: str, meter_id: str) -> TenantAlert:
        row = (await self.conn.execute(sa.select(tenant_alerts).where(
            tenant_alerts.c.tenant_id == tenant_id, tenant_alerts.c.meter_id == meter_id))).first()
        return from_row(TenantAlert, row) or TenantAlert(tenant_id, meter_id)

    async def save_alert(self, alert: TenantAlert) -> None:
        values = to_row(alert, tenant_alerts)
        updated = await self.conn.execute(tenant_alerts.update().where(
            tenant_alerts.c.tenant_id == alert.tenant_id, tenant_alerts.c.meter_id == alert.meter_id).values(**values))
        if updated.rowcount == 0:
            await self._insert(tenant_alerts, values, "alert row exists", "tenant_alert_exists")

    # --- the shared call budget --------------------------------------------------------------------
    async def _budget_row(self, name: str, now: datetime):
        query = sa.select(call_budgets).where(call_budgets.c.name == name)
        if self.locks_rows:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        if row is None:  # first use: create it, then lock it (a concurrent creator loses the insert quietly)
            insert = (postgresql.insert if self.conn.dialect.name == "postgresql" else sqlite.insert)(call_budgets)
            await self.conn.execute(insert.values(name=name, tokens=Decimal(-1), updated_at=now)
                                    .on_conflict_do_nothing())
            row = (await self.conn.execute(query)).first()
        return row

    async def take_calls(self, name: str, *, want: int, per_minute: int, now: datetime) -> int:
        """Calls granted from the shared bucket; the row stays locked until the transaction ends."""
        row = await self._budget_row(name, now)
        bucket = None if row.tokens < 0 else Bucket(Decimal(row.tokens), row.updated_at)
        granted, after = take(bucket, want=want, per_minute=per_minute, now=now)
        await self.conn.execute(call_budgets.update().where(call_budgets.c.name == name)
                                .values(tokens=after.tokens, updated_at=after.updated_at))
        return granted

    async def claim_run(self, name: str, *, now: datetime, next_run_at: datetime) -> bool:
        """True for the one caller (of all workers) that takes this turn: due, and moved on to `next_run_at`."""
        await self._budget_row(name, now)
        updated = await self.conn.execute(call_budgets.update().where(
            call_budgets.c.name == name,
            sa.or_(call_budgets.c.next_run_at.is_(None), call_budgets.c.next_run_at <= now))
            .values(next_run_at=next_run_at))
        return updated.rowcount == 1
