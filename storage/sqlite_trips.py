"""SQLite statements in one trip to aiosqlite's thread instead of four.

aiosqlite runs each sqlite3 call on its own thread, and SQLAlchemy's adapter makes one call per step of a
statement: open a cursor, execute, fetch the rows, close. Each step is a trip (a queue put, the thread's
work, a wake-up of the event loop through its self-pipe, a greenlet switch back), taken while SQLite's one
connection is held (storage/db.py). Under a rush the event loop is busy, so every trip also waits its turn
there: 20 trips for a payment start held the connection for milliseconds, and payment starts queued
behind it. Here the four steps run as one function on the thread: one trip per statement. A write
transaction's `BEGIN IMMEDIATE` rides with its first statement too (`begin_with_next_statement`): the
writer lock is taken by the same trip that first needs it, as before, one trip sooner.

What the rest of SQLAlchemy reads from the cursor afterwards (description, rowcount, lastrowid) are plain
attributes of the sqlite3 cursor, readable from the loop's thread (aiosqlite's own Cursor reads them so).
Built on SQLAlchemy 2.1's adapter (`AsyncAdapt_dbapi_cursor`) and aiosqlite's `Connection._execute`; the
tests in tests/test_sqlite_trips.py run every statement of the suite through it on SQLite, and check the
trips.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_cursor

BEGIN = "BEGIN IMMEDIATE"
_PENDING = "lipameter_begin_pending"  # set on the aiosqlite.Connection (the adapter has no instance dict)


def _run(raw: sqlite3.Connection, operation: str, parameters: Any, many: bool,
         begin: bool = False) -> tuple[sqlite3.Cursor, list | None]:
    """On aiosqlite's thread: the whole statement, rows fetched, cursor closed (its attributes stay); first
    the transaction's BEGIN when it is the transaction's first statement."""
    if begin:
        raw.execute(BEGIN)
    cursor = raw.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else None
    finally:
        cursor.close()
    return cursor, rows


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    _awaitable_cursor_close = False  # nothing left to close: the statement closed its cursor on the thread

    def _make_new_cursor(self, connection: Any) -> Any:
        return None  # made on the thread, with the statement

    def _aenter_cursor(self, cursor: Any) -> Any:
        return None

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._one_trip(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._one_trip(operation, seq_of_parameters, many=True)

    async def _one_trip(self, operation: Any, parameters: Any, *, many: bool) -> Any:
        async with self._adapt_connection._execute_mutex:
            driver = self._connection  # aiosqlite.Connection
            begin = drop_pending_begin(driver)  # this statement carries it
            cursor, rows = await driver._execute(_run, driver._conn, operation, parameters, many, begin)
            self._cursor = cursor
            if rows is not None:
                self._rows = collections.deque(rows)
            return cursor

    def close(self) -> None:
        self._rows.clear()

    async def _async_soft_close(self) -> None:
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor

    # A transaction that ran no statement began nothing: nothing to commit. (A rollback goes through
    # storage/db.py's do_rollback, which drops a pending BEGIN before it asks the driver.)
    def commit(self) -> None:
        if not drop_pending_begin(self._connection):
            super().commit()


def begin_with_next_statement(driver: Any) -> None:
    """BEGIN IMMEDIATE, sent with the next statement of `driver` (an aiosqlite.Connection under a
    OneTripConnection) rather than on a trip of its own."""
    driver.__dict__[_PENDING] = True


def drop_pending_begin(driver: Any) -> bool:
    """Forget a BEGIN no statement has carried yet; True if there was one (nothing began, then)."""
    return bool(driver.__dict__.pop(_PENDING, False))


def use_one_trip_cursors(dbapi_connection: Any) -> None:
    """On SQLAlchemy's "connect" event: this connection's cursors from here on take one trip a statement.
    (The adapter's classes keep no per-instance dict, so its class is swapped, to a subclass of the same
    layout that differs only in the cursor class it makes.)"""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneTripConnection
