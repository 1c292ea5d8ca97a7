"""The money ledger per meter and in total, and the audit log, for the dashboard and its CSV exports.

Both halves of the ledger are dated by the payment's creation (a manual top-up by its own), so that
within any date range "credited from payments" is comparable with "paid": it can never be more."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.dashboard import money_sum
from storage.tables import audit_log, meters, payments, topups

LEDGER_COLUMNS = ("paid", "credited", "manual", "waiting", "failed", "in_review", "pending")


def _in_range(column, start: datetime | None, end: datetime | None) -> list:
    return [*([column >= start] if start else []), *([column < end] if end else [])]


def accepted_payment() -> sa.ColumnElement:
    """Money counted as paid. An admin who resolves a review with "credit" accepts that money as paid."""
    return sa.or_(payments.c.status == "completed",
                  sa.and_(payments.c.status == "needs_review", payments.c.resolution.like("credit:%")))


def received_amount() -> sa.ColumnElement:
    """What a payment brought in: a C2B payment is whatever the payer sent, to the cent (`amount` keeps
    only its whole KES)."""
    return sa.case((payments.c.channel == "c2b", payments.c.paid_amount), else_=payments.c.amount)


def _payment_sums(start: datetime | None, end: datetime | None):
    accepted, received = accepted_payment(), received_amount()
    unresolved = sa.and_(payments.c.status == "needs_review", payments.c.resolved_at.is_(None))
    return (sa.select(payments.c.meter_id,
                      money_sum(sa.case((accepted, received))).label("paid"),
                      money_sum(sa.case((payments.c.status.in_(("requested", "pending")), payments.c.amount)))
                      .label("pending"),
                      money_sum(sa.case((unresolved, payments.c.amount))).label("payment_review"))
            .where(*_in_range(payments.c.created_at, start, end)).group_by(payments.c.meter_id))


def _topup_sums(start: datetime | None, end: datetime | None):
    dated = sa.func.coalesce(payments.c.created_at, topups.c.created_at)
    from_payment = topups.c.payment_id.is_not(None)

    def total(*conditions):
        return money_sum(sa.case((sa.and_(*conditions), topups.c.amount)))

    return (sa.select(topups.c.meter_id,
                      total(topups.c.status == "applied", from_payment).label("credited"),
                      total(topups.c.status == "applied", ~from_payment).label("manual"),
                      total(topups.c.status.in_(("queued", "sending"))).label("waiting"),
                      total(topups.c.status == "failed").label("failed"),
                      total(topups.c.status == "needs_review").label("topup_review"))
            .select_from(topups.outerjoin(payments, payments.c.id == topups.c.payment_id))
            .where(*_in_range(dated, start, end)).group_by(topups.c.meter_id))


async def ledger(engine: AsyncEngine, *, start: datetime | None = None, end: datetime | None = None) -> dict:
    """{"rows": [per meter], "total": {...}}; every amount is a Decimal KES."""
    async with engine.connect() as conn:
        meter_rows = (await conn.execute(sa.select(meters.c.id, meters.c.number, meters.c.name)
                                         .order_by(meters.c.number))).all()
        paid = {row.meter_id: row for row in await conn.execute(_payment_sums(start, end))}
        done = {row.meter_id: row for row in await conn.execute(_topup_sums(start, end))}
    zero = Decimal(0)
    rows = []
    for meter in meter_rows:
        p, t = paid.get(meter.id), done.get(meter.id)
        row = {"meter_number": meter.number, "meter_name": meter.name,
               "paid": p.paid if p else zero, "pending": p.pending if p else zero,
               "credited": t.credited if t else zero, "manual": t.manual if t else zero,
               "waiting": t.waiting if t else zero, "failed": t.failed if t else zero,
               "in_review": (p.payment_review if p else zero) + (t.topup_review if t else zero)}
        rows.append({k: Decimal(v) if k in LEDGER_COLUMNS else v for k, v in row.items()})
    total = {column: sum((row[column] for row in rows), zero) for column in LEDGER_COLUMNS}
    return {"rows": rows, "total": total}


async def audit_entries(engine: AsyncEngine, *, actor: str = "", action: str = "", before_id: int | None = None,
                        limit: int = 100) -> list[dict]:
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if actor:
        query = query.where(audit_log.c.actor == actor)
    if action:
        query = query.where(audit_log.c.action == action)
    if before_id:
        query = query.where(audit_log.c.id < before_id)
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]
