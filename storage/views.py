"""Read models: joined, read-only queries for the API and the dashboard (no domain objects needed)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.tables import meters, payments, topups


async def payment_view(engine: AsyncEngine, ref: str) -> dict | None:
    """A payment by its id, its CheckoutRequestID or its M-Pesa receipt (a C2B payment's TransID)."""
    query = (
        sa.select(
            payments,
            meters.c.name.label("meter_name"), meters.c.number.label("meter_number"),
            topups.c.status.label("topup_status"), topups.c.balance_before, topups.c.balance_after,
            topups.c.units_added, topups.c.last_error.label("topup_error"),
        )
        .join(meters, meters.c.id == payments.c.meter_id)
        .outerjoin(topups, topups.c.payment_id == payments.c.id)
        .where(sa.or_(payments.c.id == ref, payments.c.checkout_request_id == ref, payments.c.mpesa_receipt == ref))
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return dict(row._mapping) if row else None
