"""Read models for the dashboard's charts: money in per Nairobi day, top-ups by outcome, and one
meter's balance line and top-ups. Plain values; web/admin/charts.py draws them."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from core.usage.derive import day_start
from storage.dashboard import money_sum
from storage.ledger import accepted_payment, received_amount
from storage.tables import meter_daily, meter_readings, payments, topups

# The overview's outcome buckets: "queued" includes the one in flight.
TOPUP_OUTCOMES = {"applied": ("applied",), "queued": ("queued", "sending"), "failed": ("failed",),
                  "review": ("needs_review",)}


async def money_per_day(engine: AsyncEngine, days: list[date]) -> list[Decimal]:
    """Money accepted as paid (as the ledger counts it) per Nairobi day, dated by the payment. One query:
    a sum per day, so the database does the adding, whatever the engine."""
    received = received_amount()
    columns = [money_sum(sa.case((sa.and_(payments.c.created_at >= day_start(day),
                                          payments.c.created_at < day_start(day + timedelta(days=1))), received)))
               .label(f"d{i}") for i, day in enumerate(days)]
    query = sa.select(*columns).where(accepted_payment(), payments.c.created_at >= day_start(days[0]),
                                      payments.c.created_at < day_start(days[-1] + timedelta(days=1)))
    async with engine.connect() as conn:
        row = (await conn.execute(query)).one()
    return [Decimal(value) for value in row]


async def topups_by_outcome(engine: AsyncEngine, *, since: datetime) -> dict[str, tuple[int, Decimal]]:
    """{outcome: (count, KES)} of the top-ups created since `since`."""
    query = (sa.select(topups.c.status, sa.func.count().label("n"), money_sum(topups.c.amount).label("kes"))
             .where(topups.c.created_at >= since).group_by(topups.c.status))
    async with engine.connect() as conn:
        by_status = {row.status: (row.n, Decimal(row.kes)) for row in await conn.execute(query)}
    return {outcome: (sum(by_status.get(s, (0, 0))[0] for s in statuses),
                      sum((by_status.get(s, (0, Decimal(0)))[1] for s in statuses), Decimal(0)))
            for outcome, statuses in TOPUP_OUTCOMES.items()}


async def balance_points(engine: AsyncEngine, meter_id: str, *, since: date) -> list[tuple[datetime, Decimal]]:
    """The meter's balance over time since a Nairobi day: every raw reading kept, and for the older,
    rolled-up days the balance at the day's end."""
    async with engine.connect() as conn:
        raw = (await conn.execute(sa.select(meter_readings.c.at, meter_readings.c.balance).where(
            meter_readings.c.meter_id == meter_id, meter_readings.c.at >= day_start(since),
            meter_readings.c.balance.is_not(None)).order_by(meter_readings.c.at, meter_readings.c.id))).all()
        rolled = (await conn.execute(sa.select(meter_daily.c.day, meter_daily.c.last_balance).where(
            meter_daily.c.meter_id == meter_id, meter_daily.c.day >= since,
            meter_daily.c.last_balance.is_not(None)).order_by(meter_daily.c.day))).all()
    first_raw = raw[0].at if raw else None
    points = [(day_start(row.day + timedelta(days=1)) - timedelta(seconds=1), Decimal(row.last_balance))
              for row in rolled]
    points = [p for p in points if first_raw is None or p[0] < first_raw]
    return points + [(row.at, Decimal(row.balance)) for row in raw]


async def applied_topups(engine: AsyncEngine, meter_id: str, *, since: datetime) -> list[tuple[datetime, Decimal]]:
    query = (sa.select(topups.c.applied_at, topups.c.amount).where(
        topups.c.meter_id == meter_id, topups.c.status == "applied", topups.c.applied_at >= since)
        .order_by(topups.c.applied_at))
    async with engine.connect() as conn:
        return [(row.applied_at, Decimal(row.amount)) for row in await conn.execute(query)]
