"""Worker heartbeats: each worker process keeps one row fresh; `lipameter doctor` reads the newest."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.tables import worker_heartbeats


class SqlHeartbeats:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._started: dict[str, datetime] = {}

    async def beat(self, worker_id: str, at: datetime) -> None:
        """Upsert without dialect tricks: one process owns its row, so update-then-insert cannot race."""
        started = self._started.setdefault(worker_id, at)
        async with self.engine.begin() as conn:
            updated = await conn.execute(worker_heartbeats.update()
                                         .where(worker_heartbeats.c.worker_id == worker_id)
                                         .values(seen_at=at, started_at=started))
            if updated.rowcount == 0:
                await conn.execute(worker_heartbeats.insert().values(worker_id=worker_id, started_at=started,
                                                                     seen_at=at))

    async def latest(self) -> tuple[str, datetime] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(worker_heartbeats.c.worker_id, worker_heartbeats.c.seen_at)
                                      .order_by(worker_heartbeats.c.seen_at.desc()).limit(1))).first()
        return (row.worker_id, row.seen_at) if row else None
