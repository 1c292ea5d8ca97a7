"""USSD sessions (core.ports.UssdSessionStore) and the recent-payments read the dialogue shows
(core.ports.PaymentHistory).

Each call is its own short transaction: a hop reads its session, runs the dialogue (whose effects open
their own units of work) and writes the session back only if no other hop got there first.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from core.dialogue.sessions import UssdSession
from core.dialogue.types import PaymentLine
from storage.db import one_statement
from storage.rows import insert_or_nothing, select_by
from storage.tables import meters, payments, ussd_sessions

MAX_TEXT = 2000  # Africa's Talking's cumulative `text`; the endpoint refuses longer ones before this


# Built once (see storage/rows.py): a hop's session moves on only from the hop count it was read at.
_UPDATE_AT_HOPS = ussd_sessions.update().where(ussd_sessions.c.session_id == sa.bindparam("sid"),
                                               ussd_sessions.c.hops == sa.bindparam("expected_hops"))


class SqlUssdSessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, session_id: str) -> UssdSession | None:
        async with one_statement(self.engine) as conn:
            row = (await conn.execute(select_by(ussd_sessions, "session_id"), {"value": session_id})).first()
        if row is None:
            return None
        values = dict(row._mapping)
        values["end_report"] = values.get("end_report") or {}
        return UssdSession(**values)

    async def save(self, record: UssdSession, *, expected_hops: int | None) -> bool:
        """Insert a new session, or update one still at `expected_hops`. False: another hop won the race."""
        row = {
            "session_id": record.session_id, "phone": record.phone, "service_code": record.service_code,
            "network_code": record.network_code, "state": record.state, "last_text": record.last_text[:MAX_TEXT],
            "last_answer": record.last_answer, "hops": record.hops, "ended": record.ended,
            "payment_id": record.payment_id, "created_at": record.created_at, "updated_at": record.updated_at,
        }
        async with self.engine.begin() as conn:
            if expected_hops is None:
                # ON CONFLICT DO NOTHING, not a savepoint around a failing INSERT: one round trip, not three.
                result = await conn.execute(insert_or_nothing(ussd_sessions, conn.dialect.name), row)
                return result.rowcount == 1
            del row["created_at"]
            result = await conn.execute(_UPDATE_AT_HOPS, {"sid": record.session_id, "expected_hops": expected_hops,
                                                          **row})
            return result.rowcount == 1

    async def record_end(self, session_id: str, *, status: str, report: dict, at: datetime) -> bool:
        """Africa's Talking's end-of-session report, kept on the session for support; moves no money."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                ussd_sessions.update().where(ussd_sessions.c.session_id == session_id)
                .values(end_status=status[:16], end_report=report, ended=True, updated_at=at))
            return result.rowcount == 1

    async def purge(self, *, before: datetime, unpaid_before: datetime | None = None) -> int:
        """Sessions last touched before `before` are of no use to anyone (a USSD session lasts minutes);
        those that started no payment go sooner, at `unpaid_before` (they are most of what a flood leaves)."""
        stale = ussd_sessions.c.updated_at < before
        if unpaid_before is not None:
            stale = sa.or_(stale, sa.and_(ussd_sessions.c.payment_id.is_(None), ussd_sessions.c.updated_at < unpaid_before))
        async with self.engine.begin() as conn:
            result = await conn.execute(ussd_sessions.delete().where(stale))
            return result.rowcount

    async def started_since(self, phone: str, since: datetime) -> int:
        query = (sa.select(sa.func.count()).select_from(ussd_sessions)
                 .where(ussd_sessions.c.phone == phone, ussd_sessions.c.created_at >= since))
        async with one_statement(self.engine) as conn:
            return int(await conn.scalar(query) or 0)


class SqlPaymentHistory:
    """A phone's latest payments, newest first (core.ports.PaymentHistory)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def recent(self, phone: str, limit: int) -> list[PaymentLine]:
        query = (
            sa.select(payments.c.created_at, payments.c.amount, payments.c.status, meters.c.number)
            .join(meters, meters.c.id == payments.c.meter_id)
            .where(payments.c.phone == phone)
            .order_by(payments.c.created_at.desc(), payments.c.id.desc())
            .limit(limit)
        )
        async with one_statement(self.engine) as conn:
            rows = list(await conn.execute(query))
        return [PaymentLine(at=r.created_at, meter_number=r.number, amount=r.amount, status=r.status) for r in rows]
