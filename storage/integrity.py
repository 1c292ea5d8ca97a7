"""The figures `lipameter audit` checks (core/audit/checks.py holds the rules): read-only queries."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.audit.facts import Facts, MeterMoney, ReviewItem, TopUpInFlight
from storage.ledger import ledger
from storage.tables import jobs, meters, mpesa_callbacks, payments, topups


def _age_s(now: datetime, then: datetime | None) -> float:
    return (now - then).total_seconds() if then is not None else 0.0


async def read_facts(engine: AsyncEngine, *, now: datetime) -> Facts:
    books = await ledger(engine)
    money = [MeterMoney(meter_number=row["meter_number"], paid=row["paid"], credited=row["credited"], manual=row["manual"])
             for row in books["rows"]]
    async with engine.connect() as conn:
        return Facts(
            money=money,
            completed_without_topup=await _completed_without_topup(conn),
            payments_with_many_topups=[(r.payment_id, r.n) for r in await conn.execute(
                sa.select(topups.c.payment_id, sa.func.count().label("n")).where(topups.c.payment_id.is_not(None))
                .group_by(topups.c.payment_id).having(sa.func.count() > 1))],
            failed_without_reason=list((await conn.execute(sa.select(topups.c.id).where(
                topups.c.status == "failed", sa.func.coalesce(topups.c.last_error, topups.c.reason).is_(None))))
                .scalars()),
            in_flight=await _in_flight(conn, now),
            payments_in_review=await _count(conn, payments, payments.c.status == "needs_review",
                                            payments.c.resolved_at.is_(None)),
            topups_in_review=await _count(conn, topups, topups.c.status == "needs_review",
                                          topups.c.resolved_at.is_(None)),
            receipts_used_twice=[(r.mpesa_receipt, r.n) for r in await conn.execute(
                sa.select(payments.c.mpesa_receipt, sa.func.count().label("n"))
                .where(payments.c.mpesa_receipt.is_not(None)).group_by(payments.c.mpesa_receipt)
                .having(sa.func.count() > 1))],
            callbacks_without_outcome=[(r.id, _age_s(now, r.received_at)) for r in await conn.execute(
                sa.select(mpesa_callbacks.c.id, mpesa_callbacks.c.received_at)
                .where(mpesa_callbacks.c.outcome == "received"))],
            jobs_past_lease=[(r.id, r.kind, _age_s(now, r.lease_until)) for r in await conn.execute(
                sa.select(jobs.c.id, jobs.c.kind, jobs.c.lease_until)
                .where(jobs.c.status == "running", jobs.c.lease_until < now))],
            shared_devices=await _shared_devices(conn),
            reviews=await _reviews(conn),
            jobs_waiting={r.kind: r.n for r in await conn.execute(
                sa.select(jobs.c.kind, sa.func.count().label("n")).where(jobs.c.status.in_(("queued", "running")))
                .group_by(jobs.c.kind))},
            oldest_job_age_s=_age_s(now, await conn.scalar(sa.select(sa.func.min(jobs.c.run_after)).where(
                jobs.c.status.in_(("queued", "running")), jobs.c.run_after <= now))),
        )


async def _count(conn: AsyncConnection, table: sa.Table, *conditions) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(table).where(*conditions))).scalar_one())


async def _completed_without_topup(conn: AsyncConnection) -> list[str]:
    query = (sa.select(payments.c.id)
             .select_from(payments.outerjoin(topups, topups.c.payment_id == payments.c.id))
             .where(payments.c.status == "completed", topups.c.id.is_(None)))
    return list((await conn.execute(query)).scalars())


async def _in_flight(conn: AsyncConnection, now: datetime) -> list[TopUpInFlight]:
    query = (sa.select(topups.c.id, topups.c.status, topups.c.created_at, meters.c.number)
             .select_from(topups.join(meters, meters.c.id == topups.c.meter_id))
             .where(topups.c.status.in_(("queued", "sending"))).order_by(topups.c.created_at))
    return [TopUpInFlight(topup_id=r.id, meter_number=r.number, status=r.status, age_s=_age_s(now, r.created_at))
            for r in await conn.execute(query)]


async def _shared_devices(conn: AsyncConnection) -> list[tuple[str, list[str]]]:
    shared = (sa.select(meters.c.device_id).where(meters.c.active.is_(True)).group_by(meters.c.device_id)
              .having(sa.func.count() > 1))
    rows = (await conn.execute(sa.select(meters.c.device_id, meters.c.number)
                               .where(meters.c.active.is_(True), meters.c.device_id.in_(shared))
                               .order_by(meters.c.device_id, meters.c.number))).all()
    grouped: dict[str, list[str]] = {}
    for row in rows:
        grouped.setdefault(row.device_id, []).append(row.number)
    return sorted(grouped.items())


async def _reviews(conn: AsyncConnection) -> list[ReviewItem]:
    """Open reviews, named by amount and meter (never the payer's phone)."""
    topup_rows = await conn.execute(
        sa.select(topups.c.amount, topups.c.updated_at, meters.c.number)
        .select_from(topups.join(meters, meters.c.id == topups.c.meter_id))
        .where(topups.c.status == "needs_review", topups.c.resolved_at.is_(None)))
    payment_rows = await conn.execute(
        sa.select(payments.c.amount, payments.c.updated_at, meters.c.number)
        .select_from(payments.join(meters, meters.c.id == payments.c.meter_id))
        .where(payments.c.status == "needs_review", payments.c.resolved_at.is_(None)))
    items = [ReviewItem(f"top-up KES {r.amount:f} on meter {r.number}", r.updated_at) for r in topup_rows]
    items += [ReviewItem(f"payment KES {r.amount} for meter {r.number}", r.updated_at) for r in payment_rows]
    return sorted(items, key=lambda item: item.since)
