"""The read model behind a monthly statement (core/statements): one month's payments, credits and manual
top-ups per meter, dated as in the ledger, and its opening and closing balances and consumption from
the readings (the raw ones of the last days and the daily roll-ups). Read-only, batched: a handful of
queries for the whole property, not a handful per meter."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.meters.profiles import MeterProfile
from core.shared.errors import NotFound
from core.statements.model import Balance, MeterStatement, Month, PaymentLine, Statement, TopupLine
from core.usage.derive import daily_usage, merge_days
from core.usage.model import DailyUsage, Reading, ReadingSource
from core.usage.service import unit_of, uses_energy_total
from storage.ledger import accepted_payment, ledger, received_amount
from storage.rows import from_row
from storage.tables import meter_daily, meter_readings, meter_usage, meters, payments, topups


def _in(column, month: Month) -> list:
    return [column >= month.start, column < month.end]


async def _payments(conn: AsyncConnection, month: Month) -> dict[str, list[PaymentLine]]:
    query = (sa.select(payments.c.meter_id, payments.c.created_at, payments.c.mpesa_receipt, payments.c.phone,
                       payments.c.channel, received_amount().label("received"))
             .where(accepted_payment(), *_in(payments.c.created_at, month))
             .order_by(payments.c.created_at, payments.c.id))
    lines = defaultdict(list)
    for row in await conn.execute(query):
        lines[row.meter_id].append(PaymentLine(at=row.created_at, receipt=row.mpesa_receipt, phone=row.phone,
                                               channel=row.channel, amount=Decimal(row.received)))
    return lines


async def _topups(conn: AsyncConnection, month: Month) -> tuple[dict, dict]:
    """(credits from payments, manual top-ups), applied ones, per meter."""
    dated = sa.func.coalesce(payments.c.created_at, topups.c.created_at)
    query = (sa.select(topups.c.meter_id, topups.c.applied_at, topups.c.amount, topups.c.payment_id,
                       topups.c.reason, topups.c.applied_by, payments.c.mpesa_receipt)
             .select_from(topups.outerjoin(payments, payments.c.id == topups.c.payment_id))
             .where(topups.c.status == "applied", *_in(dated, month))
             .order_by(dated, topups.c.id))
    credits, manual = defaultdict(list), defaultdict(list)
    for row in await conn.execute(query):
        if row.payment_id is not None:
            credits[row.meter_id].append(TopupLine(at=row.applied_at, amount=Decimal(row.amount),
                                                   receipt=row.mpesa_receipt))
        else:
            note = f"{row.reason or ''} (by {row.applied_by})" if row.applied_by else (row.reason or "")
            manual[row.meter_id].append(TopupLine(at=row.applied_at, amount=Decimal(row.amount), note=note.strip()))
    return credits, manual


async def _days(conn: AsyncConnection, month: Month, meter_rows, profiles: Mapping[str, MeterProfile]) -> dict:
    """Per meter: its days up to the month's end, from the roll-ups and the raw readings (raw wins), the
    last day before the month included (for the opening balance)."""
    ids = [row.id for row in meter_rows]
    before = (sa.select(meter_daily.c.meter_id, sa.func.max(meter_daily.c.day).label("day"))
              .where(meter_daily.c.day < month.first, meter_daily.c.last_balance.is_not(None),
                     meter_daily.c.meter_id.in_(ids)).group_by(meter_daily.c.meter_id).subquery())
    rolled_rows = await conn.execute(sa.select(meter_daily).where(
        meter_daily.c.meter_id.in_(ids),
        sa.or_(sa.and_(meter_daily.c.day >= month.first, meter_daily.c.day < month.next),
               sa.tuple_(meter_daily.c.meter_id, meter_daily.c.day).in_(sa.select(before.c.meter_id, before.c.day)))))
    rolled = defaultdict(list)
    for row in rolled_rows:
        rolled[row.meter_id].append(from_row(DailyUsage, row))
    # The day before the month too: the interval across its first midnight belongs partly to it.
    raw_rows = await conn.execute(sa.select(meter_readings).where(
        meter_readings.c.meter_id.in_(ids), meter_readings.c.at >= month.start - timedelta(days=1),
        meter_readings.c.at < month.end).order_by(meter_readings.c.meter_id, meter_readings.c.at, meter_readings.c.id))
    raw = defaultdict(list)
    for row in raw_rows:
        raw[row.meter_id].append(Reading(meter_id=row.meter_id, at=row.at, balance=row.balance,
                                         source=ReadingSource(row.source), energy_total=row.energy_total,
                                         credit=row.credit))
    rolled_until = {row.meter_id: row.rolled_until for row in await conn.execute(
        sa.select(meter_usage.c.meter_id, meter_usage.c.rolled_until).where(meter_usage.c.meter_id.in_(ids)))}
    days = {}
    for row in meter_rows:
        profile = profiles.get(row.profile)
        since = rolled_until.get(row.id)
        recent = daily_usage(row.id, raw[row.id], use_energy_total=bool(profile and uses_energy_total(profile)),
                             since=since)
        days[row.id] = [day for day in merge_days(rolled[row.id], recent) if day.day < month.next]
    return days


def _balances(month: Month, days: list[DailyUsage]) -> tuple[Balance | None, Balance | None, Decimal | None, int]:
    """(opening, closing, consumption, days covered). Opening: the last balance before the month (else
    the month's first reading); closing: the month's last."""
    before = [d for d in days if d.day < month.first and d.last_balance is not None]
    within = [d for d in days if d.day >= month.first]
    read = [d for d in within if d.first_balance is not None]
    opening = (Balance(before[-1].last_balance, before[-1].day) if before
               else Balance(read[0].first_balance, read[0].day) if read else None)
    closing = next((Balance(d.last_balance, d.day) for d in reversed(within) if d.last_balance is not None), None)
    used = [d.consumption for d in within if d.consumption is not None]
    return opening, closing, (sum(used, Decimal(0)) if used else None), len(used)


async def monthly_statement(engine: AsyncEngine, month: Month, *, profiles: Mapping[str, MeterProfile],
                            made_at: datetime, meter_number: str | None = None) -> Statement:
    query = sa.select(meters.c.id, meters.c.number, meters.c.name, meters.c.profile).order_by(meters.c.number)
    if meter_number is not None:
        query = query.where(meters.c.number == meter_number)
    book = await ledger(engine, start=month.start, end=month.end)
    waiting = {row["meter_number"]: row["waiting"] + row["failed"] + row["in_review"] for row in book["rows"]}
    async with engine.connect() as conn:
        meter_rows = (await conn.execute(query)).all()
        if meter_number is not None and not meter_rows:
            raise NotFound(f"no meter {meter_number!r}: see `lipameter meter list`", code="unknown_meter")
        paid = await _payments(conn, month)
        credits, manual = await _topups(conn, month)
        days = await _days(conn, month, meter_rows, profiles)
    statements = []
    for row in meter_rows:
        opening, closing, consumption, covered = _balances(month, days[row.id])
        statements.append(MeterStatement(
            number=row.number, name=row.name, unit=unit_of(profiles.get(row.profile)), opening=opening,
            closing=closing, consumption=consumption, days_covered=covered, payments=paid[row.id],
            credits=credits[row.id], manual=manual[row.id], waiting=waiting.get(row.number, Decimal(0))))
    return Statement(month=month, meters=statements, whole_property=meter_number is None, made_at=made_at)
