"""Engines. SQLite: WAL, a busy timeout and BEGIN IMMEDIATE, so that every write transaction holds the
single writer lock from its first statement (no lock-upgrade deadlocks between two callbacks).
PostgreSQL: a pool, row locks with FOR UPDATE and SKIP LOCKED in the repositories."""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa
from pydantic_core import PydanticSerializationError, from_json, to_json
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage.sqlite_trips import (
    BEGIN,
    OneTripConnection,
    begin_with_next_statement,
    drop_pending_begin,
    use_one_trip_cursors,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./lipameter.db"
SQLITE_BUSY_TIMEOUT_MS = 15_000
PG_POOL_RECYCLE_S = 300  # below common idle timeouts of proxies and managed databases
PG_POOL_SIZE = 20  # connections a process holds at most
PG_SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}  # see create_engine


def normalize_url(url: str) -> str:
    """Accept the plain `postgresql://` and `sqlite://` forms people paste and pick our async drivers."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def to_json_text(value) -> str:
    """Every JSON column's writer (a dialogue's state on each USSD hop, a job's payload, …): pydantic_core,
    Rust and already here with pydantic, ~2.5 µs for a hop's state where json.dumps took ~11. What it
    refuses (a lone surrogate, which a chat's text can carry) goes to json as before."""
    try:
        return to_json(value).decode()
    except PydanticSerializationError:
        return json.dumps(value)


def from_json_text(text: str | bytes):
    """Every JSON column's reader (on PostgreSQL, asyncpg's json codec calls it): ~3 µs for a hop's state
    where json.loads took ~10; json for what pydantic_core refuses (an escaped lone surrogate)."""
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)


JSON_CODEC = {"json_serializer": to_json_text, "json_deserializer": from_json_text}


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str) -> AsyncEngine:
    url = normalize_url(url)
    if not is_sqlite(url):
        # hide_parameters: a logged database error must not carry phone numbers or receipts.
        # No pre-ping (a round trip on every checkout); connections are recycled instead, and a dropped one
        # fails its transaction, which every caller already handles as a database error.
        # All PG_POOL_SIZE connections are kept: an "overflow" connection is closed when it is returned, so
        # under load (64 payment starts at once) a new one was opened every ~15 payments, ~3 ms of the
        # event loop each (asyncpg's connect and setup) and a server process forked. The most a process
        # holds is unchanged (10 + 10 overflow before).
        # plan_cache_mode: asyncpg prepares every statement, and after five runs PostgreSQL keeps one
        # generic plan for it, costed with the table's size when it was made, until the next ANALYZE (a
        # minute or more away). A rush grows ussd_sessions, payments and jobs faster than that: plans made
        # while a table was small kept scanning it whole (measured on a fresh database: ~150 rows read and
        # ~180 µs of the server's CPU per USSD hop, the hop rate halved, and from run to run 0.21-0.45 of
        # bare). Planned each time from the table as it is, with the values at hand: ~40-65 µs a hop, and
        # the rate steady. Our statements are small and batched, so planning them again costs little: the
        # inbox drain, the heaviest in statements per item, applied 2.5 % fewer callbacks a second (4.5 %
        # with 500,000 stored payments), alternated twice.
        return create_async_engine(url, pool_recycle=PG_POOL_RECYCLE_S, pool_size=PG_POOL_SIZE, max_overflow=0,
                                   hide_parameters=True, connect_args={"server_settings": PG_SERVER_SETTINGS},
                                   **JSON_CODEC)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # One connection per engine: every transaction takes SQLite's single writer lock (BEGIN IMMEDIATE), so
    # more connections only wait in SQLite's busy handler, which sleeps up to 100 ms between tries and
    # collapses under load (measured: 67 callbacks/s at 64 connections). Waiting in the pool's queue
    # instead is first come, first served, without sleeps.
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, hide_parameters=True,
                                 pool_size=1, max_overflow=0, pool_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, **JSON_CODEC)
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        use_one_trip_cursors(dbapi_connection)  # one trip to aiosqlite's thread a statement, not four
        # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection) -> None:
        if connection.get_execution_options().get(ONE_STATEMENT):
            return
        if isinstance(connection.connection.dbapi_connection, OneTripConnection):
            begin_with_next_statement(connection.connection.driver_connection)  # one trip fewer a transaction
        else:
            connection.exec_driver_sql(BEGIN)

    # SQLAlchemy rolls a connection back when it is done with it (a one_statement connection too) and again
    # when the pool takes it back. Through aiosqlite each is a trip to the driver's thread and back through
    # the event loop, made while the one connection is held, and for nothing when no transaction is open
    # (sqlite3's own rollback() does nothing then). Asked here, in_transaction is read without that trip.
    dialect = engine.sync_engine.dialect
    rollback = dialect.do_rollback

    def do_rollback(dbapi_connection) -> None:
        try:
            driver = dbapi_connection.driver_connection
            # A BEGIN still waiting for a statement never went: nothing began, nothing to roll back.
            idle = drop_pending_begin(driver) or not driver.in_transaction
        except (AttributeError, ValueError):  # closed or invalidated: the driver's own rollback decides
            idle = False
        if not idle:
            rollback(dbapi_connection)

    dialect.do_rollback = do_rollback  # type: ignore[method-assign]


ONE_STATEMENT = "lipameter_one_statement"


# Per engine, the same engine (its pool) with the autocommit options set once: a connection from it needs no
# execution_options() call, one pass fewer through SQLAlchemy's greenlet bridge per use (measured on
# SQLite: 431 -> 376 µs of the event loop for a checkout, SELECT 1 and return; ~4 % on PostgreSQL).
_AUTOCOMMIT_ENGINES: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


def autocommit_engine(engine: AsyncEngine) -> AsyncEngine:
    """`engine` whose connections run each statement on its own, outside any transaction, committed when
    execute() returns. PostgreSQL sends no BEGIN and COMMIT or ROLLBACK; SQLite runs in autocommit (the
    driver's isolation_level is None, see _configure_sqlite) without BEGIN IMMEDIATE. Two writes are two
    transactions."""
    derived = _AUTOCOMMIT_ENGINES.get(engine)
    if derived is None:  # it holds the sync engine, not `engine`: the entry goes with `engine`
        options = {ONE_STATEMENT: True} if engine.dialect.name == "sqlite" else {"isolation_level": "AUTOCOMMIT"}
        derived = _AUTOCOMMIT_ENGINES[engine] = engine.execution_options(**options)
    return derived


@contextlib.asynccontextmanager
async def one_statement(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for ONE statement, outside any transaction (see `autocommit_engine`): a SELECT
    (consistent on its own), or a write that stands alone. One round trip instead of three on PostgreSQL."""
    async with autocommit_engine(engine).connect() as conn:
        yield conn
