"""Read models for the admin dashboard: joined, read-only queries returning plain dicts.
Nothing here changes state except `set_meter_online`; actions go through core's services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.tables import (
    Money,
    meter_access,
    meters,
    mpesa_callbacks,
    notifications,
    payments,
    tenants,
    topups,
)

# Overview buckets and list filters: "queued" includes the one in flight (sending).
TOPUP_FILTERS = {"applied": ("applied",), "queued": ("queued", "sending"), "sending": ("sending",),
                 "failed": ("failed",), "needs_review": ("needs_review",)}
PAYMENT_FILTERS = {"active": ("requested", "pending"), "requested": ("requested",), "pending": ("pending",),
                   "completed": ("completed",), "failed": ("failed",), "cancelled": ("cancelled",),
                   "push_failed": ("push_failed",), "needs_review": ("needs_review",)}


def money_sum(expr) -> sa.ColumnElement:
    """SUM as exact money (Decimal), 0 when there are no rows."""
    return sa.type_coerce(sa.func.coalesce(sa.func.sum(expr), 0), Money())


async def _rows(engine: AsyncEngine, query) -> list[dict]:
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


async def _one(engine: AsyncEngine, query) -> dict | None:
    rows = await _rows(engine, query)
    return rows[0] if rows else None


# --- overview -------------------------------------------------------------------------------------

async def overview(engine: AsyncEngine, *, today: datetime, week: datetime) -> dict:
    def paid_since(start: datetime):
        return money_sum(sa.case((sa.and_(payments.c.status == "completed", payments.c.created_at >= start),
                                  payments.c.amount)))

    query = sa.select(
        paid_since(today).label("money_today"), paid_since(week).label("money_week"),
        sa.func.count(sa.case((payments.c.status.in_(PAYMENT_FILTERS["active"]), 1))).label("payments_pending"),
        sa.func.count(sa.case((sa.and_(payments.c.status == "needs_review", payments.c.resolved_at.is_(None)), 1)))
        .label("payments_review"),
    ).select_from(payments)
    result = await _one(engine, query)
    topup_counts = sa.select(topups.c.status, sa.func.count().label("n")).group_by(topups.c.status)
    by_status = {row["status"]: row["n"] for row in await _rows(engine, topup_counts)}
    for bucket, statuses in TOPUP_FILTERS.items():
        result[f"topups_{bucket}"] = sum(by_status.get(status, 0) for status in statuses)
    offline = (sa.select(sa.func.count().label("n")).select_from(meters)
               .where(meters.c.active.is_(True), meters.c.online.is_(False)))
    result["meters_offline"] = (await _one(engine, offline))["n"]
    return result


# --- payments and top-ups -------------------------------------------------------------------------

@dataclass(frozen=True)
class PaymentFilter:
    status: str = ""
    topup: str = ""
    meter: str = ""
    phone: str = ""
    channel: str = ""  # api | ussd | telegram | dashboard | c2b
    start: datetime | None = None  # UTC, inclusive
    end: datetime | None = None  # UTC, exclusive


def _payment_query(f: PaymentFilter):
    query = (sa.select(payments, meters.c.number.label("meter_number"), topups.c.id.label("topup_id"),
                       topups.c.status.label("topup_status"))
             .join(meters, meters.c.id == payments.c.meter_id)
             .outerjoin(topups, topups.c.payment_id == payments.c.id))
    if f.status in PAYMENT_FILTERS:
        query = query.where(payments.c.status.in_(PAYMENT_FILTERS[f.status]))
    if f.topup == "none":
        query = query.where(topups.c.id.is_(None))
    elif f.topup in TOPUP_FILTERS:
        query = query.where(topups.c.status.in_(TOPUP_FILTERS[f.topup]))
    if f.meter:
        query = query.where(meters.c.number == f.meter)
    if f.phone:
        query = query.where(payments.c.phone.contains(f.phone, autoescape=True))
    if f.channel:
        query = query.where(payments.c.channel == f.channel)
    if f.start:
        query = query.where(payments.c.created_at >= f.start)
    if f.end:
        query = query.where(payments.c.created_at < f.end)
    return query.order_by(payments.c.created_at.desc(), payments.c.id)


async def list_payments(engine: AsyncEngine, f: PaymentFilter, *, limit: int | None = 200) -> list[dict]:
    query = _payment_query(f)
    return await _rows(engine, query.limit(limit) if limit else query)


async def payment_detail(engine: AsyncEngine, payment_id: str) -> dict | None:
    query = (sa.select(payments, meters.c.number.label("meter_number"), meters.c.name.label("meter_name"),
                       meters.c.profile.label("meter_profile"), tenants.c.name.label("tenant_name"))
             .join(meters, meters.c.id == payments.c.meter_id)
             .outerjoin(tenants, tenants.c.id == payments.c.tenant_id)
             .where(payments.c.id == payment_id))
    payment = await _one(engine, query)
    if payment is None:
        return None
    payment["callbacks"] = await _rows(engine, sa.select(mpesa_callbacks).where(
        mpesa_callbacks.c.payment_id == payment_id).order_by(mpesa_callbacks.c.id))
    payment["topup"] = await _one(engine, sa.select(topups).where(topups.c.payment_id == payment_id))
    payment["notifications"] = await _rows(engine, sa.select(notifications).where(
        notifications.c.payment_id == payment_id).order_by(notifications.c.id))
    return payment


async def list_topups(engine: AsyncEngine, *, status: str = "", meter: str = "", limit: int = 200) -> list[dict]:
    query = (sa.select(topups, meters.c.number.label("meter_number"), payments.c.phone)
             .join(meters, meters.c.id == topups.c.meter_id)
             .outerjoin(payments, payments.c.id == topups.c.payment_id)
             .order_by(topups.c.created_at.desc(), topups.c.id).limit(limit))
    if status in TOPUP_FILTERS:
        query = query.where(topups.c.status.in_(TOPUP_FILTERS[status]))
    if meter:
        query = query.where(meters.c.number == meter)
    return await _rows(engine, query)


async def topup_detail(engine: AsyncEngine, topup_id: str) -> dict | None:
    query = (sa.select(topups, meters.c.number.label("meter_number"), meters.c.name.label("meter_name"),
                       meters.c.profile.label("meter_profile"))
             .join(meters, meters.c.id == topups.c.meter_id).where(topups.c.id == topup_id))
    topup = await _one(engine, query)
    if topup is not None:
        topup["notifications"] = await _rows(engine, sa.select(notifications).where(
            notifications.c.topup_id == topup_id).order_by(notifications.c.id))
    return topup


# --- meters ---------------------------------------------------------------------------------------

async def meters_with_last_topup(engine: AsyncEngine) -> list[dict]:
    ranked = (sa.select(topups.c.meter_id, topups.c.amount, topups.c.status, topups.c.created_at,
                        topups.c.applied_at, topups.c.id,
                        sa.func.row_number().over(partition_by=topups.c.meter_id,
                                                  order_by=(topups.c.created_at.desc(), topups.c.id)).label("rank"))
              .subquery())
    query = (sa.select(meters, ranked.c.amount.label("last_topup_amount"), ranked.c.status.label("last_topup_status"),
                       ranked.c.created_at.label("last_topup_at"), ranked.c.id.label("last_topup_id"))
             .outerjoin(ranked, sa.and_(ranked.c.meter_id == meters.c.id, ranked.c.rank == 1))
             .order_by(meters.c.number))
    return await _rows(engine, query)


async def meter_detail(engine: AsyncEngine, number: str, *, limit: int = 50) -> dict | None:
    meter = await _one(engine, sa.select(meters).where(meters.c.number == number))
    if meter is None:
        return None
    meter["payments"] = await list_payments(engine, PaymentFilter(meter=number), limit=limit)
    meter["topups"] = await list_topups(engine, meter=number, limit=limit)
    meter["tenants"] = await _rows(engine, sa.select(tenants).join(
        meter_access, meter_access.c.tenant_id == tenants.c.id).where(
        meter_access.c.meter_id == meter["id"]).order_by(tenants.c.phone))
    return meter


async def set_meter_online(engine: AsyncEngine, meter_id: str, online: bool) -> None:
    """What Tuya's device info says now: its status answer alone cannot tell (an offline device still
    reports its last values)."""
    async with engine.begin() as conn:
        await conn.execute(meters.update().where(meters.c.id == meter_id).values(online=online))


# --- tenants --------------------------------------------------------------------------------------

async def list_tenants(engine: AsyncEngine) -> list[dict]:
    last_payment = (sa.select(sa.func.max(payments.c.created_at)).where(payments.c.tenant_id == tenants.c.id)
                    .scalar_subquery())
    rows = await _rows(engine, sa.select(tenants, last_payment.label("last_payment_at")).order_by(tenants.c.phone))
    links = await _rows(engine, sa.select(meter_access.c.tenant_id, meters.c.number)
                        .join(meters, meters.c.id == meter_access.c.meter_id).order_by(meters.c.number))
    for row in rows:
        row["meters"] = [link["number"] for link in links if link["tenant_id"] == row["id"]]
    return rows


async def tenant_detail(engine: AsyncEngine, tenant_id: str, *, limit: int = 50) -> dict | None:
    tenant = await _one(engine, sa.select(tenants).where(tenants.c.id == tenant_id))
    if tenant is None:
        return None
    tenant["meters"] = await _rows(engine, sa.select(meters).join(
        meter_access, meter_access.c.meter_id == meters.c.id).where(
        meter_access.c.tenant_id == tenant_id).order_by(meters.c.number))
    query = _payment_query(PaymentFilter()).where(
        sa.or_(payments.c.tenant_id == tenant_id, payments.c.phone == tenant["phone"]))
    tenant["payments"] = await _rows(engine, query.limit(limit))
    return tenant
