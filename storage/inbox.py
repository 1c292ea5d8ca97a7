"""The callback inbox: raw M-Pesa callbacks kept durably, many requests per commit (group commit).

Every callback is committed before it is answered, which makes the commit the price of each answer.
Under a rush, requests that arrive while one commit is in flight wait for the next one and share it:
one multi-row INSERT in one transaction for all of them (storage/batch.py's Coalescer). A lone callback
is written at once, so nothing waits for a timer; a batch grows only as large as the rush makes it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.batch import Coalescer, lanes_for
from storage.db import one_statement
from storage.tables import mpesa_callbacks

MAX_BATCH = 256  # rows per INSERT: a few hundred keeps one statement well under any engine's parameter limit
_INSERT = mpesa_callbacks.insert().returning(mpesa_callbacks.c.id, sort_by_parameter_order=True)
# SQLite: SQLAlchemy cannot promise RETURNING's order there, so with sort_by_parameter_order it falls back
# to one INSERT per row (measured: 64 statements, ~60 ms for a 64-row batch, a trip to aiosqlite's thread
# each). Unordered, it is one multi-row INSERT. SQLite gives a row without an explicit id the largest id
# plus one, row by row in VALUES order, inside one statement nobody else can interleave with: the ids in
# ascending order are the rows in parameter order, whatever order RETURNING lists them in.
_INSERT_SQLITE = mpesa_callbacks.insert().returning(mpesa_callbacks.c.id)


class GroupCommitInbox:
    """One per process (per engine). `keep()` returns the stored callback's id once it is committed; if the
    commit fails, every caller in it gets the error (a 503 when the database is away)."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        # No `connect=` (a batch taken once its connection is at hand, as USSD's are): measured alternately on
        # SQLite, it lowered callback ingestion from 0.42-0.51 of bare to 0.35-0.39, most likely because
        # callbacks answered sooner leave fewer in flight, so more of them are applied before the answer
        # (web/mpesa_api.py, CALLBACK_APPLY_INLINE_MAX), a transaction each.
        self._keep = Coalescer(self._insert, name="callback-inbox", max_batch=max_batch, lanes=lanes_for(engine.dialect.name))

    @property
    def batches(self) -> int:  # commits made, and rows they carried: how much a rush shared (bench, tests)
        return self._keep.batches

    @property
    def rows(self) -> int:
        return self._keep.items

    async def keep(self, *, body: str, source: str | None, received_at: datetime, outcome: str = "received",
                   checkout_request_id: str | None = None) -> int:
        return await self._keep({"body": body, "source": source, "received_at": received_at, "outcome": outcome,
                                 "kind": "stk", "checkout_request_id": checkout_request_id})

    async def _insert(self, rows: list[dict]) -> list[int]:
        # One statement, autocommitted: a multi-row INSERT is atomic on its own, so BEGIN and COMMIT around
        # it would only add two round trips (a lone callback paid them before this was written).
        async with one_statement(self.engine) as conn:
            if len(rows) == 1:
                result = await conn.execute(mpesa_callbacks.insert(), rows[0])
                return [result.inserted_primary_key[0]]
            if conn.dialect.name == "sqlite":
                return sorted(row[0] for row in await conn.execute(_INSERT_SQLITE, rows))
            return [row[0] for row in await conn.execute(_INSERT, rows)]
