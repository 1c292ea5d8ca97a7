"""Worker heartbeats: each worker process keeps one row fresh; `lipameter doctor` reads the newest.

A beat also renews the leases of what the worker is running right now (its jobs, its top-up attempts),
so a slow but live attempt keeps its claim however long it takes, while a dead worker's claims are
taken over once its row goes stale (storage/job_queue.py, the top-up engine's claim)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.tables import jobs, topups, worker_heartbeats


@dataclass(frozen=True)
class Held:
    """What a live worker holds at a beat, and how far each kind of lease is pushed forward."""

    job_ids: list[int] = field(default_factory=list)
    job_lease_s: float = 120.0
    topup_ids: list[str] = field(default_factory=list)
    topup_lease_s: float = 180.0


class SqlHeartbeats:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._started: dict[str, datetime] = {}

    async def beat(self, worker_id: str, at: datetime, held: Held | None = None) -> None:
        """Upsert without dialect tricks: one process owns its row, so update-then-insert cannot race."""
        started = self._started.setdefault(worker_id, at)
        async with self.engine.begin() as conn:
            updated = await conn.execute(worker_heartbeats.update()
                                         .where(worker_heartbeats.c.worker_id == worker_id)
                                         .values(seen_at=at, started_at=started))
            if updated.rowcount == 0:
                await conn.execute(worker_heartbeats.insert().values(worker_id=worker_id, started_at=started,
                                                                     seen_at=at))
            if held is not None:
                await _renew(conn, worker_id, at, held)

    async def latest(self) -> tuple[str, datetime] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(worker_heartbeats.c.worker_id, worker_heartbeats.c.seen_at)
                                      .order_by(worker_heartbeats.c.seen_at.desc()).limit(1))).first()
        return (row.worker_id, row.seen_at) if row else None


async def _renew(conn: AsyncConnection, worker_id: str, at: datetime, held: Held) -> None:
    # Only rows this worker still holds: an attempt that ended (or was taken over) is left alone.
    if held.job_ids:
        await conn.execute(jobs.update().where(jobs.c.id.in_(held.job_ids), jobs.c.status == "running",
                                               jobs.c.locked_by == worker_id)
                           .values(lease_until=at + timedelta(seconds=held.job_lease_s)))
    if held.topup_ids:
        await conn.execute(topups.update().where(topups.c.id.in_(held.topup_ids), topups.c.status == "sending",
                                                 topups.c.claimed_by == worker_id)
                           .values(next_attempt_at=at + timedelta(seconds=held.topup_lease_s)))
