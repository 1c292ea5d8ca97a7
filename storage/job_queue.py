"""The outbox job queue. Claims take a lease: `FOR UPDATE SKIP LOCKED` on PostgreSQL so workers never
wait on each other; on SQLite the writer lock (BEGIN IMMEDIATE) already makes the claim exclusive.

A running job is taken over when its lease ends, or sooner when the worker that holds it (`locked_by`)
has stopped beating (worker_heartbeats): a live worker's heartbeat renews the leases of the jobs it is
running, so only a dead one's jobs come back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.jobs.model import Job
from storage.tables import jobs, worker_heartbeats


def _now() -> datetime:
    return datetime.now(UTC)


_ENQUEUE = jobs.insert()  # built once: see storage/rows.py


class SqlJobQueue:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def enqueue(self, kind: str, payload: dict, *, run_after: datetime | None = None) -> None:
        now = _now()
        await self.conn.execute(_ENQUEUE, {"kind": kind, "payload": payload, "status": "queued", "attempts": 0,
                                           "run_after": run_after or now, "created_at": now, "updated_at": now})

    async def claim(self, kinds: list[str], *, worker: str, lease_s: float, limit: int,
                    silent_after_s: float | None = None) -> list[Job]:
        now = _now()
        orphaned = [sa.and_(jobs.c.status == "running", jobs.c.lease_until < now)]  # its worker died (the backstop)
        if silent_after_s is not None:
            silent = sa.select(worker_heartbeats.c.worker_id).where(
                worker_heartbeats.c.seen_at < now - timedelta(seconds=silent_after_s))
            orphaned.append(sa.and_(jobs.c.status == "running", jobs.c.locked_by.in_(silent)))
        due = sa.or_(sa.and_(jobs.c.status == "queued", jobs.c.run_after <= now), *orphaned)
        candidates = sa.select(jobs.c.id).where(jobs.c.kind.in_(kinds), due).order_by(jobs.c.run_after).limit(limit)
        if self.conn.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        ids = list((await self.conn.execute(candidates)).scalars())
        if not ids:
            return []
        claimed = await self.conn.execute(
            jobs.update().where(jobs.c.id.in_(ids))
            .values(status="running", attempts=jobs.c.attempts + 1, lease_until=now + timedelta(seconds=lease_s),
                    locked_by=worker, updated_at=now)
            .returning(jobs.c.id, jobs.c.kind, jobs.c.payload, jobs.c.attempts, jobs.c.run_after, jobs.c.status)
        )
        return sorted((Job(id=r.id, kind=r.kind, payload=r.payload, attempts=r.attempts, run_after=r.run_after,
                           status=r.status) for r in claimed), key=lambda job: job.id)

    async def done(self, job_id: int) -> None:
        await self._finish(job_id, status="done", lease_until=None)

    async def retry(self, job_id: int, *, run_after: datetime, error: str, refund_attempt: bool = False) -> None:
        values = dict(status="queued", run_after=run_after, lease_until=None, last_error=error[:500])
        if refund_attempt:
            values["attempts"] = jobs.c.attempts - 1
        await self._finish(job_id, **values)

    async def dead(self, job_id: int, *, error: str) -> None:
        await self._finish(job_id, status="dead", lease_until=None, last_error=error[:500])

    async def _finish(self, job_id: int, **values) -> None:
        await self.conn.execute(jobs.update().where(jobs.c.id == job_id).values(updated_at=_now(), **values))

    async def counts(self) -> dict[str, int]:
        rows = await self.conn.execute(sa.select(jobs.c.kind, jobs.c.status, sa.func.count()).group_by(jobs.c.kind, jobs.c.status))
        return {f"{kind}:{status}": n for kind, status, n in rows}
