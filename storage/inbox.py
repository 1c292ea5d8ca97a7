"""The callback inbox: raw M-Pesa callbacks kept durably, many requests per commit (group commit).

Every callback is committed before it is answered, which makes the commit the price of each answer.
Under a rush, requests that arrive while one commit is in flight wait for the next one and share it:
one multi-row INSERT in one transaction for all of them. A lone callback is written at once, so nothing
waits for a timer; a batch grows only as large as the rush makes it."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.tables import mpesa_callbacks

MAX_BATCH = 256  # rows per INSERT: a few hundred keeps one statement well under any engine's parameter limit
_INSERT = mpesa_callbacks.insert().returning(mpesa_callbacks.c.id, sort_by_parameter_order=True)


class GroupCommitInbox:
    """One per process (per engine). `keep()` returns the stored callback's id once it is committed."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._waiting: list[tuple[dict, asyncio.Future[int]]] = []
        self._writer: asyncio.Task | None = None
        self.batches = 0  # commits made, and rows they carried: how much the rush shared (bench, tests)
        self.rows = 0

    async def keep(self, *, body: str, source: str | None, received_at: datetime, outcome: str = "received",
                   checkout_request_id: str | None = None) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(({"body": body, "source": source, "received_at": received_at, "outcome": outcome,
                               "kind": "stk", "checkout_request_id": checkout_request_id}, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="callback-inbox")
        return await future

    async def _write_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
            try:
                ids = await self._insert([row for row, _ in batch])
            except BaseException as error:  # every caller in the batch gets the error (a 503 when the database is away)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error if isinstance(error, Exception) else RuntimeError("inbox stopped"))
                if not isinstance(error, Exception):
                    raise
                continue
            self.batches, self.rows = self.batches + 1, self.rows + len(ids)
            for (_, future), callback_id in zip(batch, ids, strict=True):
                if not future.done():  # its request may have been cancelled (client gone); the row stays kept
                    future.set_result(callback_id)

    async def _insert(self, rows: list[dict]) -> list[int]:
        async with self.engine.begin() as conn:
            if len(rows) == 1:
                result = await conn.execute(mpesa_callbacks.insert(), rows[0])
                return [result.inserted_primary_key[0]]
            return [row[0] for row in await conn.execute(_INSERT, rows)]

    async def aclose(self) -> None:
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await self._writer

