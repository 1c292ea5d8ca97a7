"""Calls that share one statement under a rush, as the callback inbox's commits do (storage/inbox.py).

A statement's cost through SQLAlchemy and the async drivers is mostly per statement (checkout, execution,
the driver's round trip; with SQLite, trips to aiosqlite's thread while the one connection is held), little
per row: measured, a 32-row INSERT costs about a tenth per row of 32 single ones. So calls that arrive while
one batch is in flight wait for it and go together in the next. A lone call goes at once: nothing waits
for a timer, and a batch grows only as large as the rush makes it. On PostgreSQL two batches may be in
flight at once (`lanes`), so a call does not wait a whole round trip behind a batch it just missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import one_statement, to_json_text
from storage.tables import UTCDateTime

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 128  # items per batch: keeps a statement's parameters well under any engine's limit
PG_LANES = 2  # batches in flight at once on PostgreSQL (of its pool's 20 connections)


def lanes_for(dialect: str) -> int:
    """SQLite has one connection: a second batch would only queue for it."""
    return 1 if dialect == "sqlite" else PG_LANES


def statement_batches(run: Callable[..., Awaitable[Sequence[R | Exception]]], engine: AsyncEngine, *, name: str,
                      max_batch: int = MAX_BATCH) -> Coalescer[T, R]:
    """A Coalescer whose batches run `run(items, conn)` on a connection from `one_statement(engine)` (no
    transaction), taken once the connection is at hand, with the engine's lanes."""
    return Coalescer(run, name=name, max_batch=max_batch, lanes=lanes_for(engine.dialect.name),
                     connect=functools.partial(one_statement, engine))


def to_power_of_two(values: Sequence[T]) -> list[T]:
    """`values` with the last one repeated up to the next power of two (a statement of a few sizes only, each
    kept prepared: sqlite3 keeps ~100 per connection). A repeated row must change nothing: the same session
    matched again by an UPDATE's guard."""
    size = 1 << max(len(values) - 1, 0).bit_length()
    return [*values, *values[-1:] * (size - len(values))]


def one_of(column: sa.ColumnElement, name: str, dialect: str) -> sa.ColumnElement[bool]:
    """`column` is one of the values bound as `name` (a list), for a batch's read. On PostgreSQL one array
    parameter (`= ANY($1)`): the statement's text is the same for any number of values, so one prepared
    statement serves every batch, with no padding to bind. SQLite has no arrays: the list as one JSON
    parameter there, `IN (SELECT value FROM json_each(?))`, whose text is fixed too (an expanding IN was
    rendered again for each batch)."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
    listed = sa.func.json_each(sa.bindparam(name, type_=sa.JSON)).table_valued("value")
    return column.in_(sa.select(listed.c.value))


class JsonRows:
    """PostgreSQL: a batch's rows as one JSON parameter (`rows`) read as a table, `json_to_recordset($1::JSON)
    AS rows(<name> <type>, …)`, for a batch's UPDATE … FROM or INSERT … SELECT. Every statement is planned
    afresh there (storage/db.py: plan_cache_mode), and a VALUES list of 11 parameters a row took ~250 µs of
    the server's CPU to plan for 16 rows and ~2.5 ms for 64 (the USSD next hops' UPDATE, which held them
    at 0.40-0.47 of bare); this ~50 µs for any number. One statement text for every size: nothing padded,
    one prepared statement per connection.

    `table`: the rows as a table; `values[name]`: a column's value as its column takes it; `parameter(rows)`:
    the rows (dicts with those keys) as the parameter's text, one serialization for the batch."""

    def __init__(self, columns: Sequence[tuple[str, sa.types.TypeEngine]], name: str = "rows") -> None:
        # A JSON column's value goes as its own JSON text, declared TEXT and cast back: json_to_recordset
        # reads every string in its document and refuses a lone surrogate's escape, which a JSON column's
        # value may carry (storage/db.py:to_json_text) and PostgreSQL's JSON type keeps given the text.
        self._documents = tuple(column for column, type_ in columns if isinstance(type_, sa.JSON))
        self._times = tuple(column for column, type_ in columns if isinstance(type_, UTCDateTime))
        declared = [(column, sa.Text() if column in self._documents else type_) for column, type_ in columns]
        self.table = (sa.func.json_to_recordset(sa.bindparam("rows", type_=sa.JSON))
                      .table_valued(*(sa.column(column, type_) for column, type_ in declared))
                      .render_derived(name=name, with_types=True))
        self.values: dict[str, sa.ColumnElement] = {
            column: sa.cast(self.table.c[column], type_) if column in self._documents else self.table.c[column]
            for column, type_ in columns}

    def parameter(self, rows: Sequence[dict[str, Any]]) -> str:
        """Datetimes as aware UTC ISO text (a naive one refused, as UTCDateTime refuses it)."""
        utc, times, documents = UTCDateTime(), self._times, self._documents

        def converted(row: dict[str, Any]) -> dict[str, Any]:
            return {**row, **{key: _iso(utc.process_bind_param(row[key], _PG)) for key in times},
                    **{key: to_json_text(row[key]) for key in documents}}

        return to_json_text([converted(row) for row in rows])


_PG = postgresql.dialect()


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


class Coalescer(Generic[T, R]):
    """`await coalescer(item)` returns `run(batch)[i]` for the batch the item went in. `run` gets the items
    in arrival order and returns one result each, in the same order; a result that is an exception is
    raised to its caller alone. If `run` raises, every call in the batch raises that error (as each would
    have on its own: the database is away).

    `connect`: an async context manager (a connection) entered before a batch is taken and passed to `run`
    as its second argument. A batch then holds every call that arrived while it waited for the connection,
    not only those there before: with SQLite's one connection, which the batches of several coalescers
    (a USSD hop's session read, caller read and INSERT) take in turns, each batch was taken a whole turn
    early and went out smaller than it could have (measured under a rush of first hops: 22.8 hops a batch
    for each; now 28.8, 31.5 and 22.7). If the connection cannot be had, the calls waiting get that error."""

    def __init__(self, run: Callable[..., Awaitable[Sequence[R | Exception]]], *, name: str,
                 max_batch: int = MAX_BATCH, lanes: int = 1,
                 connect: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None) -> None:
        self._run, self.name, self.max_batch, self._connect = run, name, max_batch, connect
        # Batches in flight at once. One where the database serializes anyway (SQLite's one connection);
        # more where it does not (PostgreSQL's pool): a call arriving while a batch waits on its round trip
        # goes at once in another lane, instead of waiting a whole round trip for the next batch.
        self.lanes = max(1, lanes)
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0  # batches run, and the items they carried: how much a rush shared (bench, tests)
        self.items = 0

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        # done(), not a done-callback: a lane whose loop just found nothing waiting is over at once, and
        # this call must start another rather than wait for a lane that will never look again.
        self._tasks = {task for task in self._tasks if not task.done()}
        if len(self._tasks) < self.lanes:
            self._tasks.add(asyncio.create_task(self._drain(), name=self.name))
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch: list[tuple[T, asyncio.Future[R]]] = []
            try:
                async with self._connection() as connection:
                    batch = self._take()  # none if another lane took them while this one waited for its connection
                    results = await self._results(batch, connection)
            except BaseException as error:
                # The batch's error, or the connection's before any batch was taken (then the calls waiting
                # now get it): each call raises it, as it would have on its own.
                for _, future in batch or self._take():
                    if not future.done():
                        future.set_exception(error if isinstance(error, Exception) else RuntimeError(f"{self.name} stopped"))
                if not isinstance(error, Exception):
                    raise
                continue
            self.batches, self.items = self.batches + bool(batch), self.items + len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its caller is gone (cancelled); what was written stays written
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _connection(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._connect() if self._connect is not None else contextlib.nullcontext()

    async def _results(self, batch: list[tuple[T, asyncio.Future[R]]], connection: Any) -> Sequence[R | Exception]:
        if not batch:
            return []
        items = [item for item, _ in batch]
        results = await (self._run(items) if self._connect is None else self._run(items, connection))
        if len(results) != len(batch):
            raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} calls")
        return results

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
        return batch
