"""The outbox claim on both engines: no job runs twice at once, a dead worker's lease expires."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from core.jobs.worker import Worker, WorkerConfig
from storage.db import create_engine
from storage.uow import SqlUnitOfWork
from tests.fakes import FakeClock


async def enqueue(engine, n: int, kind: str = "t") -> None:
    async with SqlUnitOfWork(engine) as uow:
        for i in range(n):
            await uow.jobs.enqueue(kind, {"i": i})
        await uow.commit()


async def claim_all(engine, worker: str, seen: list) -> None:
    while True:
        async with SqlUnitOfWork(engine) as uow:
            jobs = await uow.jobs.claim(["t"], worker=worker, lease_s=60, limit=3)
            await uow.commit()
        if not jobs:
            return
        for job in jobs:
            seen.append((worker, job.payload["i"]))
            await asyncio.sleep(0)  # let the other worker in between claims


async def test_two_workers_claim_each_job_once(database_url):
    setup = create_engine(database_url)
    await enqueue(setup, 60)
    await setup.dispose()
    # Two engines: two connection pools, as two worker processes would have.
    a, b = create_engine(database_url), create_engine(database_url)
    seen: list = []
    try:
        await asyncio.gather(claim_all(a, "worker-a", seen), claim_all(b, "worker-b", seen))
    finally:
        await a.dispose()
        await b.dispose()
    numbers = sorted(i for _, i in seen)
    assert numbers == list(range(60))  # every job once, none twice


@pytest.mark.postgres
async def test_skip_locked_lets_a_second_claimer_pass_a_locked_batch(pg_url):
    from tests.conftest import _truncate_pg

    await asyncio.to_thread(_truncate_pg, pg_url)
    engine = create_engine(pg_url)
    try:
        await enqueue(engine, 4)
        async with SqlUnitOfWork(engine) as first:
            held = await first.jobs.claim(["t"], worker="a", lease_s=60, limit=2)  # transaction still open
            async with SqlUnitOfWork(engine) as second:
                passed = await asyncio.wait_for(second.jobs.claim(["t"], worker="b", lease_s=60, limit=4), 5)
                await second.commit()
            await first.commit()
        assert {j.id for j in held}.isdisjoint({j.id for j in passed}) and len(passed) == 2
    finally:
        await engine.dispose()


async def test_expired_lease_is_claimed_again(engine):
    await enqueue(engine, 1)
    async with SqlUnitOfWork(engine) as uow:
        [job] = await uow.jobs.claim(["t"], worker="dead", lease_s=60, limit=5)
        await uow.commit()
    async with SqlUnitOfWork(engine) as uow:
        assert await uow.jobs.claim(["t"], worker="other", lease_s=60, limit=5) == []
        await uow.conn.execute(sa.text("UPDATE jobs SET lease_until = :t"),
                               {"t": datetime.now(UTC) - timedelta(seconds=1)})
        [again] = await uow.jobs.claim(["t"], worker="other", lease_s=60, limit=5)
        await uow.commit()
    assert again.id == job.id and again.attempts == 2


async def test_worker_runs_retries_and_buries_jobs(engine):
    await enqueue(engine, 1, kind="ok")
    await enqueue(engine, 1, kind="flaky")
    await enqueue(engine, 1, kind="broken")
    calls = {"ok": 0, "flaky": 0, "broken": 0}

    async def ok(payload):
        calls["ok"] += 1

    async def flaky(payload):
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise RuntimeError("first time fails")

    async def broken(payload):
        calls["broken"] += 1
        raise RuntimeError("always fails")

    clock = FakeClock(datetime.now(UTC))
    worker = Worker(uow_factory=lambda: SqlUnitOfWork(engine), handlers={"ok": ok, "flaky": flaky, "broken": broken},
                    clock=clock, config=WorkerConfig(worker_id="w", max_attempts=2))
    assert await worker.run_once() == 3
    async with engine.connect() as conn:
        await conn.execute(sa.text("UPDATE jobs SET run_after = :t WHERE status = 'queued'"),
                           {"t": datetime.now(UTC) - timedelta(seconds=1)})
        await conn.commit()
    assert await worker.run_once() == 2
    async with engine.connect() as conn:
        rows = dict((await conn.execute(sa.text("SELECT kind, status FROM jobs"))).all())
    assert rows == {"ok": "done", "flaky": "done", "broken": "dead"}
    assert calls == {"ok": 1, "flaky": 2, "broken": 2}
