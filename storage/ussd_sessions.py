"""USSD sessions (core.ports.UssdSessionStore) and the recent-payments read the dialogue shows
(core.ports.PaymentHistory).

No statement here needs a transaction around it (storage/db.py:one_statement): a hop reads its session,
runs the dialogue (whose effects open their own units of work) and writes the session back only if no
other hop got there first, the guard being in the write itself (ON CONFLICT, WHERE hops =). Under a rush,
the hops' reads share statements, and so do their writes: one INSERT for new sessions, one UPDATE for
stored ones (storage/batch.py).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.dialogue.sessions import UssdSession
from core.dialogue.types import PaymentLine
from storage.batch import MAX_BATCH, Coalescer, JsonRows, one_of, statement_batches, to_power_of_two
from storage.db import one_statement
from storage.rows import insert_or_nothing, select_by
from storage.tables import meters, payments, ussd_sessions

MAX_TEXT = 2000  # Africa's Talking's cumulative `text`; the endpoint refuses longer ones before this


_END = ussd_sessions.update().where(ussd_sessions.c.session_id == sa.bindparam("sid"))


@functools.cache
def _by_ids(dialect: str) -> sa.Select:
    return sa.select(ussd_sessions).where(one_of(ussd_sessions.c.session_id, "ids", dialect))


@functools.cache
def _recent(dialect: str) -> sa.Select:
    return (sa.select(ussd_sessions.c.phone, ussd_sessions.c.created_at)
            .where(one_of(ussd_sessions.c.phone, "phones", dialect), ussd_sessions.c.created_at >= sa.bindparam("since")))


# What a hop's write changes in a stored session, and the hop count it was read at (the guard).
_CHANGED = ("state", "last_text", "last_answer", "hops", "ended", "payment_id", "service_code", "network_code",
            "updated_at")
_UPDATE_KEYS = ("session_id", "expected_hops", *_CHANGED)


def _key_type(key: str) -> sa.types.TypeEngine:
    """The type a write's key is bound as: its column's (the guard's `expected_hops`: the hop count's)."""
    return ussd_sessions.c["hops" if key == "expected_hops" else key].type


def _updated_ids(size: int) -> sa.Update:
    """`size` sessions' UPDATE, each only if still at the hop count it was read at, RETURNING the ids it
    updated: `WITH changes AS (SELECT … UNION ALL …) UPDATE … FROM changes` (SQLite since 3.33, which plans
    it in process in microseconds; PostgreSQL's is `_pg_updated_ids`). Binds `<key>_<row>`. Not
    `sa.values()`: SQLAlchemy cannot cache a VALUES list's compiled form."""
    def row(i: int) -> sa.Select:
        return sa.select(*(sa.bindparam(f"{key}_{i}", type_=_key_type(key)).label(key) for key in _UPDATE_KEYS))

    changes = sa.union_all(*(row(i) for i in range(size))).cte("changes")
    return (ussd_sessions.update()
            .where(ussd_sessions.c.session_id == changes.c.session_id, ussd_sessions.c.hops == changes.c.expected_hops)
            .values({name: changes.c[name] for name in _CHANGED})
            .returning(ussd_sessions.c.session_id)
            .add_cte(changes))


# (SQL, and per positional parameter: its key, its row, the bind processor SQLAlchemy would apply to it)
Compiled = tuple[str, tuple[tuple[str, int, Callable[[Any], Any] | None], ...]]
_DRIVER_SQL: dict[tuple[str, int, str], Compiled] = {}


def _driver_sql(which: str, size: int, dialect: sa.Dialect) -> Compiled:
    """SQLite's batch write of `size` rows (`_updated_ids`, or `_inserted_rows` for "insert") compiled once
    per size, run as driver SQL with the parameters processed as SQLAlchemy would (JSON, UTCDateTime,
    Boolean). Through execute(), SQLAlchemy looks its compiled form up under the statement's cache key, a
    tuple it hashes again on every execution (Python keeps no tuple's hash), and this one grows with the
    rows: measured under callgrind, 40 % of the UPDATE's instructions; an INSERT of a list of rows with
    RETURNING is rendered again for each batch ("insertmanyvalues")."""
    compiled = _DRIVER_SQL.get((which, size, dialect.name))
    if compiled is None:
        statement = (_inserted_rows(size) if which == "insert" else _updated_ids(size)).compile(dialect=dialect)
        params = []
        for name in statement.positiontup or ():
            key, row = name.rsplit("_", 1)
            params.append((key, int(row), statement.binds[name].type.dialect_impl(dialect).bind_processor(dialect)))
        compiled = _DRIVER_SQL[(which, size, dialect.name)] = (statement.string, tuple(params))
    return compiled


_INSERT_KEYS = ("session_id", "phone", "service_code", "network_code", "state", "last_text", "last_answer", "hops",
                "ended", "payment_id", "created_at", "updated_at")
_PG_SQL: dict[str, str] = {}


def _pg_sql(which: str, dialect: sa.Dialect) -> str:
    """PostgreSQL's batch INSERT or UPDATE, its rows one JSON parameter (storage/batch.py:JsonRows: planned
    in ~50 µs for any number of rows, where `_updated_ids(16)` took ~250), compiled once and run as driver
    SQL (as `_driver_sql`, for the same reason)."""
    sql = _PG_SQL.get(which)
    if sql is None:
        statement = _pg_inserted_ids() if which == "insert" else _pg_updated_ids()
        sql = _PG_SQL[which] = statement.compile(dialect=dialect).string
    return sql


def _json_rows(keys: tuple[str, ...]) -> JsonRows:
    return JsonRows([(key, _key_type(key)) for key in keys])


_NEW_ROWS, _CHANGED_ROWS = _json_rows(_INSERT_KEYS), _json_rows(_UPDATE_KEYS)


def _pg_inserted_ids() -> sa.Insert:
    select = sa.select(*(_NEW_ROWS.values[key] for key in _INSERT_KEYS))
    return (insert_or_nothing(ussd_sessions, "postgresql").from_select(_INSERT_KEYS, select)
            .returning(ussd_sessions.c.session_id))


def _pg_updated_ids() -> sa.Update:
    rows = _CHANGED_ROWS.values
    return (ussd_sessions.update()
            .where(ussd_sessions.c.session_id == rows["session_id"], ussd_sessions.c.hops == rows["expected_hops"])
            .values({name: rows[name] for name in _CHANGED})
            .returning(ussd_sessions.c.session_id))


def _inserted_rows(size: int) -> sa.Insert:
    """SQLite's INSERT of `size` sessions … ON CONFLICT DO NOTHING RETURNING the ids it inserted (PostgreSQL's
    is `_pg_inserted_ids`). Binds `<key>_<row>`. A row repeated to pad the batch (to_power_of_two) conflicts
    with its first copy and is not inserted again."""
    rows = [{key: sa.bindparam(f"{key}_{i}", type_=_key_type(key)) for key in _INSERT_KEYS} for i in range(size)]
    return insert_or_nothing(ussd_sessions, "sqlite").values(rows).returning(ussd_sessions.c.session_id)


def _open_query() -> sa.Select:
    """One hop's read: the session by id, and when there is none, the phone's sessions opened since a
    time: one row always (a one-row anchor LEFT JOIN the session). The count runs only in the CASE's
    branch for a missing session."""
    recent = ussd_sessions.alias("recent")
    opened = (sa.select(sa.func.count()).select_from(recent)
              .where(recent.c.phone == sa.bindparam("phone"), recent.c.created_at >= sa.bindparam("since"))
              .scalar_subquery())
    anchor = sa.select(sa.literal_column("1").label("one")).subquery("anchor")
    return (sa.select(ussd_sessions, sa.case((ussd_sessions.c.session_id.is_(None), opened)).label("opened"))
            .select_from(anchor.outerjoin(ussd_sessions, ussd_sessions.c.session_id == sa.bindparam("sid"))))


_OPEN = _open_query()
_SESSION_COLUMNS = tuple(ussd_sessions.c.keys())

Ask = tuple[str, str, datetime]  # an open(): session id, phone, since


def _session(row: sa.Row) -> UssdSession:
    # A row whose first columns are the table's, in order (every read here selects the table first; the
    # hop's read adds `opened` after them): by position, as a row's _mapping looks each name up in Python.
    values = dict(zip(_SESSION_COLUMNS, row, strict=False))
    values["end_report"] = values["end_report"] or {}
    return UssdSession(**values)


class SqlUssdSessionStore:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.opens: Coalescer[Ask, tuple[UssdSession | None, int]] = statement_batches(
            self._open_batch, engine, name="ussd-session-reads", max_batch=max_batch)
        self.inserts: Coalescer[dict, bool] = statement_batches(
            functools.partial(_each_once, write=_insert_rows), engine, name="ussd-session-inserts",
            max_batch=max_batch)
        self.updates: Coalescer[dict, bool] = statement_batches(
            functools.partial(_each_once, write=_update_rows), engine, name="ussd-session-updates",
            max_batch=max_batch)

    async def get(self, session_id: str) -> UssdSession | None:
        async with one_statement(self.engine) as conn:
            row = (await conn.execute(select_by(ussd_sessions, "session_id"), {"value": session_id})).first()
        return None if row is None else _session(row)

    async def open(self, session_id: str, *, phone: str, since: datetime) -> tuple[UssdSession | None, int]:
        """The session, or None and how many sessions `phone` opened since `since` (0 when it exists)."""
        return await self.opens((session_id, phone, since))

    async def _open_batch(self, asks: list[Ask], conn: AsyncConnection) -> list[tuple[UssdSession | None, int]]:
        if len(asks) == 1:
            [(session_id, phone, since)] = asks
            row = (await conn.execute(_OPEN, {"sid": session_id, "phone": phone, "since": since})).one()
            return [(None, int(row.opened or 0)) if row.session_id is None else (_session(row), 0)]
        # Several hops at once: their sessions in one statement, then the recent sessions of the phones
        # whose session is new, each counted from its own hop's `since`.
        dialect = conn.dialect.name
        found = {row.session_id: row
                 for row in await conn.execute(_by_ids(dialect), {"ids": sorted({sid for sid, _, _ in asks})})}
        new = [(phone, since) for sid, phone, since in asks if sid not in found]
        opened: dict[str, list[datetime]] = {}
        if new:
            query = {"phones": sorted({phone for phone, _ in new}), "since": min(since for _, since in new)}
            for phone, created_at in await conn.execute(_recent(dialect), query):
                opened.setdefault(phone, []).append(created_at)
        return [(_session(found[sid]), 0) if sid in found else
                (None, sum(1 for at in opened.get(phone, ()) if at >= since)) for sid, phone, since in asks]

    async def save(self, record: UssdSession, *, expected_hops: int | None) -> bool:
        """Insert a new session, or update one still at `expected_hops`. False: another hop won the race.
        One statement, its guard in itself (ON CONFLICT, WHERE hops =): nothing to wrap in a transaction.
        Under a rush, hops' INSERTs share a statement, and so do their UPDATEs."""
        row = {
            "session_id": record.session_id, "phone": record.phone, "service_code": record.service_code,
            "network_code": record.network_code, "state": record.state, "last_text": record.last_text[:MAX_TEXT],
            "last_answer": record.last_answer, "hops": record.hops, "ended": record.ended,
            "payment_id": record.payment_id, "created_at": record.created_at, "updated_at": record.updated_at,
        }
        if expected_hops is None:
            return await self.inserts(row)
        return await self.updates({"session_id": record.session_id, "expected_hops": expected_hops,
                                   **{name: row[name] for name in _CHANGED}})

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


async def _each_once(rows: list[dict], conn: AsyncConnection, *,
                     write: Callable[[AsyncConnection, list[dict]], Awaitable[set[str]]]) -> list[bool | Exception]:
    """A batch of session writes, `write(conn, rows)` returning the session ids it wrote: True for each
    row written. The same session twice in a batch (a gateway retry racing its original) is written once:
    the first one wins, as the first of two single statements would. A row the database refuses fails its
    own hop only (each row then goes on its own; not a savepoint around a failing statement)."""
    first: dict[str, int] = {}
    for i, row in enumerate(rows):
        first.setdefault(row["session_id"], i)
    unique = [rows[i] for i in first.values()]
    try:
        written = await write(conn, unique)
    except (sa.exc.IntegrityError, sa.exc.DataError):
        if len(unique) == 1:
            raise
        outcomes: dict[str, bool | Exception] = {}
        for row in unique:
            try:
                outcomes[row["session_id"]] = bool(await write(conn, [row]))
            except (sa.exc.IntegrityError, sa.exc.DataError) as error:
                outcomes[row["session_id"]] = error
        return [outcomes[row["session_id"]] if first[row["session_id"]] == i else False
                for i, row in enumerate(rows)]
    return [first[row["session_id"]] == i and row["session_id"] in written for i, row in enumerate(rows)]


async def _insert_rows(conn: AsyncConnection, rows: list[dict]) -> set[str]:
    """The session ids inserted (those not already there), in one statement outside any transaction."""
    if len(rows) == 1:
        result = await conn.execute(insert_or_nothing(ussd_sessions, conn.dialect.name), rows[0])
        return {rows[0]["session_id"]} if result.rowcount == 1 else set()
    if conn.dialect.name == "postgresql":
        return await _pg_write(conn, "insert", _NEW_ROWS.parameter(rows))
    return await _sqlite_write(conn, "insert", rows)


async def _update_rows(conn: AsyncConnection, rows: list[dict]) -> set[str]:
    """The session ids updated (those still at their `expected_hops`), in one statement."""
    if conn.dialect.name == "postgresql":
        return await _pg_write(conn, "update", _CHANGED_ROWS.parameter(rows))
    return await _sqlite_write(conn, "update", rows)


async def _sqlite_write(conn: AsyncConnection, which: str, rows: list[dict]) -> set[str]:
    """SQLite's batch `which` ("insert" or "update") of `rows`, as driver SQL (`_driver_sql`)."""
    rows = to_power_of_two(rows)  # a few statement sizes, each kept prepared
    sql, params = _driver_sql(which, len(rows), conn.dialect)
    values = tuple(rows[i][key] if process is None else process(rows[i][key]) for key, i, process in params)
    return set((await conn.exec_driver_sql(sql, values)).scalars())


async def _pg_write(conn: AsyncConnection, which: str, rows_json: str) -> set[str]:
    """PostgreSQL's batch `which` ("insert" or "update") of the rows given as JsonRows.parameter's text."""
    return set((await conn.exec_driver_sql(_pg_sql(which, conn.dialect), (rows_json,))).scalars())


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
