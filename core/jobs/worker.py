"""The job loop: claim due outbox jobs with a lease, run their handler, record the outcome.
The kinds and their payloads are core/jobs/kinds.py.

A job whose worker died is claimed again, so handlers must be safe to run twice (they check the state
they are about to change). "Died" is noticed by the heartbeat: every `heartbeat_every_s` the worker
writes its row and renews the leases of the jobs it is running (however long they take); a running job
whose worker has been silent for `silent_after_s` is taken over, and the lease (`lease_s`) is only the
backstop for a worker that never beat. The heartbeat runs in its own task, so a long sweep or a busy
loop never makes a live worker look dead. A periodic sweep (reconcile) runs beside the jobs.

Up to `concurrency` jobs run at once, so one slow job (a meter whose answer hangs) holds back no other:
the loop claims only as many jobs as it has free slots, and claims more as soon as one finishes. Jobs
that must not overlap are kept apart by the state they change (one `sending` top-up per meter is a
unique index), not by the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.jobs.model import Job
from core.ports import Clock, UnitOfWork
from core.shared.errors import UpstreamError

log = logging.getLogger("lipameter.worker")

Handler = Callable[[dict], Awaitable[None]]
# (worker id, now, ids of the jobs it is running): records "alive" and renews those jobs' leases.
Heartbeat = Callable[[str, datetime, list[int]], Awaitable[object]]


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
    heartbeat_every_s: float = 5.0
    silent_after_s: float = 15.0  # a worker whose heartbeat is this old is dead: its jobs are taken over
    concurrency: int = 8  # jobs in flight at once in this worker (WORKER_CONCURRENCY)
    drain_batch: int = 64  # kept callbacks listed per inbox drain; a full list means more wait: drain again


class Worker:
    def __init__(
        self,
        *,
        uow_factory: Callable[[], UnitOfWork],
        handlers: dict[str, Handler],
        clock: Clock,
        config: WorkerConfig,
        sweep: Callable[[], Awaitable[object]] | None = None,
        heartbeat: Heartbeat | None = None,
        drain: Callable[[int], Awaitable[int]] | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.handlers = handlers
        self.clock = clock
        self.config = config
        self.sweep = sweep
        self.heartbeat = heartbeat  # "this worker is alive": `lipameter doctor`, and its claims renewed
        self._running_ids: set[int] = set()  # jobs this worker is running now
        # The callback inbox: applies what the web answered without applying (a rush), or what a process
        # that died kept. Woken by this process's callback handler, else it looks every poll.
        self.drain = drain
        self._inbox_wake = asyncio.Event()
        self._jobs_wake = asyncio.Event()

    def wake_inbox(self) -> None:
        """A callback was kept and not applied: drain now rather than at the next poll."""
        self._inbox_wake.set()

    def wake_jobs(self) -> None:
        """This process just queued a job (a callback applied by its request): claim now, not at the next
        poll. Workers in other processes still find it within `poll_s`."""
        self._jobs_wake.set()

    async def run_once(self) -> int:
        """Claim and run one batch of due jobs (all at once, up to `concurrency`); returns how many ran."""
        jobs = await self._claim(min(self.config.batch, self.config.concurrency))
        await asyncio.gather(*(self._run(job) for job in jobs))
        return len(jobs)

    async def _claim(self, limit: int) -> list[Job]:
        async with self.uow_factory() as uow:
            jobs = await uow.jobs.claim(list(self.handlers), worker=self.config.worker_id,
                                        lease_s=self.config.lease_s, limit=limit,
                                        silent_after_s=self.config.silent_after_s if self.heartbeat else None)
            await uow.commit()
        return jobs

    async def _run(self, job: Job) -> None:
        self._running_ids.add(job.id)
        try:
            await self._handle(job)
        finally:
            self._running_ids.discard(job.id)

    async def _handle(self, job: Job) -> None:
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

    async def _beat(self) -> None:
        if self.heartbeat is None:
            return
        try:
            await self.heartbeat(self.config.worker_id, self.clock.now(), sorted(self._running_ids))
        except Exception:
            log.warning("could not record the worker heartbeat; will try again", exc_info=True)

    async def _keep_beating(self, until: asyncio.Event) -> None:
        """Beat on time whatever the loop is doing, until `until` is set (after the last job finished)."""
        while True:
            try:
                await asyncio.wait_for(until.wait(), timeout=self.config.heartbeat_every_s)
                return
            except TimeoutError:
                await self._beat()

    async def _keep_sweeping(self, stop: asyncio.Event) -> None:
        """The sweep beside the claim loop, not in it: a sweep that waits on an upstream (its STK queries,
        one after another, on a slow Daraja) must hold back no top-up; claiming waited for it to finish.
        One at start, then every `sweep_every_s` from the start of the last (never two at once)."""
        if self.sweep is None:
            return
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed; will try again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, started + self.config.sweep_every_s - loop.time()))

    async def _keep_draining(self, stop: asyncio.Event) -> None:
        if self.drain is None:
            return
        while not stop.is_set():
            self._inbox_wake.clear()  # a wake during the drain below stays set: the wait returns at once
            try:
                listed = await self.drain(self.config.drain_batch)
            except Exception:
                log.exception("inbox drain failed; will try again")
                listed = 0
            if listed:
                self._jobs_wake.set()  # what it applied queued top-ups: claim them now
            if listed >= self.config.drain_batch:
                continue
            waits = {asyncio.ensure_future(self._inbox_wake.wait()), asyncio.ensure_future(stop.wait())}
            await asyncio.wait(waits, timeout=self.config.poll_s, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep up to `concurrency` jobs running until `stop` is set; then let the running ones finish
        (a SIGTERM ends the current jobs, it does not cut a top-up in half)."""
        log.info("worker %s started (jobs: %s; %d at once)", self.config.worker_id,
                 ", ".join(sorted(self.handlers)), self.config.concurrency)
        running: set[asyncio.Task] = set()
        stopping = asyncio.create_task(stop.wait())
        finished = asyncio.Event()
        await self._beat()  # before the first claim: this worker's row exists while it holds anything
        beating = asyncio.create_task(self._keep_beating(finished), name="heartbeat")
        draining = asyncio.create_task(self._keep_draining(stop), name="inbox")
        sweeping = asyncio.create_task(self._keep_sweeping(stop), name="sweep")
        try:
            while not stop.is_set():
                running = self._still_running(running)
                self._jobs_wake.clear()  # before the claim: a job queued during it wakes the wait below
                claimed = 0
                try:
                    free = self.config.concurrency - len(running)
                    if free > 0:
                        for job in await self._claim(min(self.config.batch, free)):
                            running.add(asyncio.create_task(self._run(job), name=f"job-{job.id}"))
                            claimed += 1
                except Exception:
                    log.exception("worker loop error; backing off")
                if claimed and len(running) < self.config.concurrency:
                    continue  # more may be due: claim again at once
                # Wait for a free slot, new work (a wake since the claim began, or the poll), or stop.
                woken = asyncio.ensure_future(self._jobs_wake.wait())
                await asyncio.wait({*running, stopping, woken}, timeout=self.config.poll_s,
                                   return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
        finally:
            stopping.cancel()
            await asyncio.gather(draining, sweeping, return_exceptions=True)  # what they are doing finishes
            if running:
                log.info("worker %s finishing %d running job(s)", self.config.worker_id, len(running))
                await asyncio.gather(*running, return_exceptions=True)
            # Beat until the last job is done: a worker finishing its jobs is alive, not dead.
            finished.set()
            await asyncio.gather(beating, return_exceptions=True)
        log.info("worker %s stopped", self.config.worker_id)

    @staticmethod
    def _still_running(tasks: set[asyncio.Task]) -> set[asyncio.Task]:
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                # Recording the outcome failed (the database went away); the lease brings the job back.
                log.error("job task %s failed: %r", task.get_name(), task.exception())
        return {task for task in tasks if not task.done()}
