"""storage/sqlite_trips.py: on SQLite every statement is one trip to aiosqlite's thread, and what SQLAlchemy
reads back (rows, rowcount, the new row's id, errors) is what the plain adapter gave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from storage.db import create_engine, one_statement
from storage.migrate import upgrade
from storage.tables import mpesa_callbacks

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@pytest.fixture
async def sqlite_engine(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/trips.db"
    upgrade(url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


def row(n: int) -> dict:
    return {"body": f'{{"n": {n}}}', "source": None, "received_at": T0, "outcome": "received", "kind": "stk"}


async def test_a_statement_with_rows_is_one_trip_and_reads_back_the_same(sqlite_engine, sqlite_trips):
    async with one_statement(sqlite_engine) as conn:
        await conn.execute(mpesa_callbacks.insert(), [row(1), row(2), row(3)])
        sqlite_trips.clear()
        rows = (await conn.execute(sa.select(mpesa_callbacks.c.id, mpesa_callbacks.c.body)
                                   .order_by(mpesa_callbacks.c.id))).all()
    assert [(r.id, r.body) for r in rows] == [(1, '{"n": 1}'), (2, '{"n": 2}'), (3, '{"n": 3}')]
    assert sqlite_trips == ["_run"]  # the plain adapter took four: cursor, execute, fetchall, close


async def test_the_new_rows_id_and_rowcount_reach_sqlalchemy(sqlite_engine, sqlite_trips):
    async with sqlite_engine.begin() as conn:
        inserted = await conn.execute(mpesa_callbacks.insert(), row(1))
        assert inserted.inserted_primary_key[0] == 1  # cursor.lastrowid
        await conn.execute(mpesa_callbacks.insert(), row(2))
        updated = await conn.execute(mpesa_callbacks.update().where(mpesa_callbacks.c.outcome == "received")
                                     .values(outcome="orphan"))
        assert updated.rowcount == 2
        none = await conn.execute(mpesa_callbacks.update().where(mpesa_callbacks.c.id == 99).values(outcome="x"))
        assert none.rowcount == 0
        returned = (await conn.execute(mpesa_callbacks.insert().returning(mpesa_callbacks.c.id), [row(3), row(4)])).all()
        assert sorted(r.id for r in returned) == [3, 4]


async def test_a_refused_statement_raises_sqlalchemys_error_and_the_connection_goes_on(sqlite_engine):
    async with sqlite_engine.begin() as conn:
        await conn.execute(mpesa_callbacks.insert(), {**row(1), "id": 1})
    with pytest.raises(sa.exc.IntegrityError):
        async with sqlite_engine.begin() as conn:
            await conn.execute(mpesa_callbacks.insert(), {**row(2), "id": 1})
    with pytest.raises(sa.exc.OperationalError):
        async with one_statement(sqlite_engine) as conn:
            await conn.execute(sa.text("SELECT * FROM no_such_table"))
    async with one_statement(sqlite_engine) as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(mpesa_callbacks))).scalar_one() == 1


async def connected(engine, sqlite_trips) -> None:
    """The one connection opened (its own trips: the driver's setup and the PRAGMAs), then the count cleared."""
    async with one_statement(engine) as conn:
        await conn.execute(sa.text("SELECT 1"))
    sqlite_trips.clear()


async def test_a_transactions_begin_rides_with_its_first_statement(sqlite_engine, sqlite_trips):
    await connected(sqlite_engine, sqlite_trips)
    async with sqlite_engine.begin() as conn:
        await conn.execute(mpesa_callbacks.insert(), row(1))
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw.in_transaction  # BEGIN IMMEDIATE went, with the INSERT: the writer lock is held
        await conn.execute(mpesa_callbacks.insert(), row(2))
    assert sqlite_trips == ["_run", "_run", "commit"]  # before: a trip of its own for the BEGIN
    async with one_statement(sqlite_engine) as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(mpesa_callbacks))).scalar_one() == 2


async def test_a_transaction_that_ran_nothing_leaves_no_begin_behind(sqlite_engine, sqlite_trips):
    await connected(sqlite_engine, sqlite_trips)
    async with sqlite_engine.begin():
        pass  # committed: no trip at all
    with pytest.raises(RuntimeError):
        async with sqlite_engine.begin():
            raise RuntimeError("rolled back before any statement")
    assert sqlite_trips == []
    # The next statement on the one connection runs on its own, committed at once, not inside a BEGIN left over.
    async with one_statement(sqlite_engine) as conn:
        await conn.execute(mpesa_callbacks.insert(), row(1))
        assert not (await conn.get_raw_connection()).driver_connection.in_transaction
    assert sqlite_trips == ["_run"]


async def test_a_time_is_stored_as_sqlalchemys_own_text_and_compared_in_sql(sqlite_engine):
    """storage/tables.py:UTCDateTime writes SQLite's text itself (isoformat): the same text SQLAlchemy's
    DATETIME writes, so rows written before read back the same and compare in order in SQL."""
    east_africa = timezone(timedelta(hours=3))
    at = datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=east_africa)  # 00:04:05.000060 UTC
    async with sqlite_engine.begin() as conn:
        await conn.execute(mpesa_callbacks.insert(), [{**row(1), "received_at": at},
                                                      {**row(2), "received_at": T0.replace(microsecond=0)}])
        stored = (await conn.execute(sa.text("SELECT received_at FROM mpesa_callbacks ORDER BY id"))).scalars().all()
        read = (await conn.execute(sa.select(mpesa_callbacks.c.received_at).order_by(mpesa_callbacks.c.id))).scalars().all()
        since = (await conn.execute(sa.select(mpesa_callbacks.c.id).where(
            mpesa_callbacks.c.received_at >= datetime(2026, 1, 2, 0, 4, 5, 59, tzinfo=UTC)))).scalars().all()
        with pytest.raises(sa.exc.StatementError, match="naive datetime refused"):
            await conn.execute(mpesa_callbacks.insert(), {**row(3), "received_at": T0.replace(tzinfo=None)})
    sqlalchemys = sa.DateTime().dialect_impl(sqlite_engine.dialect).bind_processor(sqlite_engine.dialect)
    assert stored == ["2026-01-02 00:04:05.000060", "2026-11-29 09:00:00.000000"]
    assert stored == [sqlalchemys(at.astimezone(UTC).replace(tzinfo=None)), sqlalchemys(T0.replace(tzinfo=None))]
    assert read == [at, T0]
    assert since == [1, 2]
