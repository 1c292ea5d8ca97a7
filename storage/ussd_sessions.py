"""USSD sessions (core.ports.UssdSessionStore) and the recent-payments read the dialogue shows
(core.ports.PaymentHistory).

Each call is one statement on its own (storage/db.py:one_statement: no BEGIN and COMMIT around it): a hop
reads its session, runs the dialogue (whose effects open their own units of work) and writes the session
back only if no other hop got there first, the guard being in the write's own WHERE (or ON CONFLICT).
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
_END = ussd_sessions.update().where(ussd_sessions.c.session_id == sa.bindparam("sid"))


def _open_query() -> sa.Select:
    """The session by id, and when there is none, the phone's sessions opened since a time: one row always
    (a one-row anchor LEFT JOIN the session), so that a first hop reads both in one statement. The count
    runs only in the CASE's branch for a missing session."""
    recent = ussd_sessions.alias("recent")
    opened = (sa.select(sa.func.count()).select_from(recent)
              .where(recent.c.phone == sa.bindparam("phone"), recent.c.created_at >= sa.bindparam("since"))
              .scalar_subquery())
    anchor = sa.select(sa.literal_column("1").label("one")).subquery("anchor")
    return (sa.select(ussd_sessions, sa.case((ussd_sessions.c.session_id.is_(None), opened)).label("opened"))
            .select_from(anchor.outerjoin(ussd_sessions, ussd_sessions.c.session_id == sa.bindparam("sid"))))


_OPEN = _open_query()
_SESSION_COLUMNS = tuple(ussd_sessions.c.keys())


def _session(values: dict) -> UssdSession:
    values["end_report"] = values.get("end_report") or {}
    return UssdSession(**values)


class SqlUssdSessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, session_id: str) -> UssdSession | None:
        async with one_statement(self.engine) as conn:
            row = (await conn.execute(select_by(ussd_sessions, "session_id"), {"value": session_id})).first()
        return None if row is None else _session(dict(row._mapping))

    async def open(self, session_id: str, *, phone: str, since: datetime) -> tuple[UssdSession | None, int]:
        """The session, or None and how many sessions `phone` opened since `since` (0 when it exists)."""
        async with one_statement(self.engine) as conn:
            row = (await conn.execute(_OPEN, {"sid": session_id, "phone": phone, "since": since})).one()
        if row.session_id is None:
            return None, int(row.opened or 0)
        mapping = row._mapping
        return _session({name: mapping[name] for name in _SESSION_COLUMNS}), 0

    async def save(self, record: UssdSession, *, expected_hops: int | None) -> bool:
        """Insert a new session, or update one still at `expected_hops`. False: another hop won the race.
        One statement, its guard in itself (ON CONFLICT, WHERE hops =): nothing to wrap in a transaction."""
        row = {
            "session_id": record.session_id, "phone": record.phone, "service_code": record.service_code,
            "network_code": record.network_code, "state": record.state, "last_text": record.last_text[:MAX_TEXT],
            "last_answer": record.last_answer, "hops": record.hops, "ended": record.ended,
            "payment_id": record.payment_id, "created_at": record.created_at, "updated_at": record.updated_at,
        }
        async with one_statement(self.engine) as conn:
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
        async with one_statement(self.engine) as conn:
            result = await conn.execute(_END, {"sid": session_id, "end_status": status[:16], "end_report": report,
                                               "ended": True, "updated_at": at})
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
