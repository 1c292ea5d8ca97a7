"""The job loop: claim due outbox jobs with a lease, run their handler, record the outcome.
The kinds and their payloads are core/jobs/kinds.py.

A job whose worker died keeps its lease until it expires and is then claimed again, so handlers must
be safe to run twice (they check the state they are about to change). A periodic sweep (reconcile)
runs beside the jobs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Awaitable, Callable

from core.shared.errors import UpstreamError
from core.jobs.model import Job
from core.ports import Clock, UnitOfWork

log = logging.getLogger("lipameter.worker")

Handler = Callable[[dict], Awaitable[None]]


class RetryLater(Exception):
    """A handler asks to run again after `delay_s` without counting it as a failure."""

    def __init__(self, delay_s: float, reason: str = "") -> None:
        super().__init__(reason)
        self.delay_s = delay_s


def backoff_s(attempt: int, *, base_s: float = 5.0, cap_s: float = 3600.0) -> float:
    """Exponential backoff with jitter: about 5 s, 10 s, 20 s … capped at an hour."""
    delay = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    return delay * random.uniform(0.8, 1.2)


@dataclass
class WorkerConfig:
    worker_id: str
    lease_s: float = 120.0
    poll_s: float = 0.5
    batch: int = 10
    max_attempts: int = 8
    sweep_every_s: float = 30.0


class Worker:
    def __init__(
        self,
        *,
        uow_factory: Callable[[], UnitOfWork],
        handlers: dict[str, Handler],
        clock: Clock,
        config: WorkerConfig,
        sweep: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.handlers = handlers
        self.clock = clock
        self.config = config
        self.sweep = sweep
        self._last_sweep = float("-inf")

    async def run_once(self) -> int:
        """Claim and run one batch of due jobs; returns how many ran."""
        async with self.uow_factory() as uow:
            jobs = await uow.jobs.claim(list(self.handlers), worker=self.config.worker_id,
                                        lease_s=self.config.lease_s, limit=self.config.batch)
            await uow.commit()
        for job in jobs:
            await self._run(job)
        return len(jobs)

    async def _run(self, job: Job) -> None:
        try:
            await self.handlers[job.kind](job.payload)
        except RetryLater as later:
            await self._reschedule(job, later.delay_s, str(later) or "retry later", count=False)
        except Exception as error:  # a handler bug must not stop the loop; the job records it
            transient = not isinstance(error, UpstreamError) or error.transient
            message = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            if transient and job.attempts < self.config.max_attempts:
                await self._reschedule(job, backoff_s(job.attempts), message, count=True)
            else:
                log.error("job %s (%s) gave up after %s attempts: %s", job.id, job.kind, job.attempts, message)
                async with self.uow_factory() as uow:
                    await uow.jobs.dead(job.id, error=message)
                    await uow.commit()
            if not isinstance(error, UpstreamError):
                log.exception("job %s (%s) crashed", job.id, job.kind)
        else:
            async with self.uow_factory() as uow:
                await uow.jobs.done(job.id)
                await uow.commit()

    async def _reschedule(self, job: Job, delay_s: float, error: str, *, count: bool) -> None:
        log.info("job %s (%s) retry in %.0fs: %s", job.id, job.kind, delay_s, error)
        async with self.uow_factory() as uow:
            await uow.jobs.retry(job.id, run_after=self.clock.now() + timedelta(seconds=delay_s), error=error,
                                 refund_attempt=not count)
            await uow.commit()

    async def maybe_sweep(self, loop_time: float) -> None:
        if self.sweep is None or loop_time - self._last_sweep < self.config.sweep_every_s:
            return
        self._last_sweep = loop_time
        try:
            await self.sweep()
        except Exception:
            log.exception("sweep failed; will try again")

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s started (jobs: %s)", self.config.worker_id, ", ".join(sorted(self.handlers)))
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await self.maybe_sweep(loop.time())
                ran = await self.run_once()
            except Exception:
                log.exception("worker loop error; backing off")
                ran = 0
            if not ran:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.config.poll_s)
                except asyncio.TimeoutError:
                    pass
        log.info("worker %s stopped", self.config.worker_id)
