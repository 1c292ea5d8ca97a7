"""No head-of-line blocking: a job that hangs (a meter whose Tuya answer never comes) holds back no other
job, yet one meter still never has two top-ups in flight. On both engines."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from core.jobs.worker import Worker, WorkerConfig
from storage.uow import SqlUnitOfWork
from tests.fakes import FakeClock
from tests.stack import Stack
from tests.test_job_queue import enqueue


async def test_a_hanging_job_holds_back_no_other(engine):
    await enqueue(engine, 1, kind="hang")
    await enqueue(engine, 3, kind="quick")
    release, order = asyncio.Event(), []

    async def hang(payload):
        await release.wait()
        order.append("hang")

    async def quick(payload):
        order.append(f"quick{payload['i']}")
        if len(order) == 3:
            release.set()  # the hanging job may finish only after every quick one did

    worker = Worker(uow_factory=lambda: SqlUnitOfWork(engine), handlers={"hang": hang, "quick": quick},
                    clock=FakeClock(datetime.now(UTC)), config=WorkerConfig(worker_id="w", concurrency=4))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(release.wait(), 30)  # a one-at-a-time loop never gets here
    stop.set()
    await asyncio.wait_for(task, 30)  # stopping lets the running job finish
    assert sorted(order[:3]) == ["quick0", "quick1", "quick2"] and order[3] == "hang"


async def test_a_sweep_that_waits_on_an_upstream_holds_back_no_job(engine):
    """The sweep's STK queries go one after another: on a slow Daraja it runs for long. Jobs still run."""
    await enqueue(engine, 2, kind="quick")
    release, done = asyncio.Event(), []

    async def sweep():
        await release.wait()  # Daraja answers the sweep only once both jobs ran

    async def quick(payload):
        done.append(payload["i"])
        if len(done) == 2:
            release.set()

    worker = Worker(uow_factory=lambda: SqlUnitOfWork(engine), handlers={"quick": quick}, sweep=sweep,
                    clock=FakeClock(datetime.now(UTC)), config=WorkerConfig(worker_id="w", concurrency=4))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(release.wait(), 30)  # a loop that sweeps before it claims never gets here
    stop.set()
    await asyncio.wait_for(task, 30)
    assert sorted(done) == [0, 1]


async def test_concurrency_is_bounded(engine):
    await enqueue(engine, 6, kind="slow")
    running, most = 0, 0
    finished = asyncio.Event()
    done = []

    async def slow(payload):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        done.append(payload["i"])
        if len(done) == 6:
            finished.set()

    worker = Worker(uow_factory=lambda: SqlUnitOfWork(engine), handlers={"slow": slow},
                    clock=FakeClock(datetime.now(UTC)),
                    config=WorkerConfig(worker_id="w", concurrency=2, poll_s=0.05))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(finished.wait(), 30)
    stop.set()
    await asyncio.wait_for(task, 30)
    assert most == 2 and sorted(done) == list(range(6))


@pytest.fixture
def stack(database_url):
    # Tuya answers slower than the client waits: A101's first status read times out after 3 s.
    stack = Stack(database_url, tuya_timeout_s=3.0, topup_backoff_s="0.5,0.5,0.5", worker_concurrency=4)
    yield stack
    stack.stop()


def wait_until(predicate, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
    return found


def test_a_hanging_meter_delays_no_other_meter(stack):
    stack.tuya.set_fault("dev-a101", "slow", n=1, seconds=4)
    hanging = stack.pay(amount=100, phone="0712345678", meter="A101")
    assert hanging.status_code == 200, hanging.text
    wait_until(lambda: stack.sql("SELECT 1 FROM topups t JOIN meters m ON m.id = t.meter_id "
                                 "WHERE m.number = 'A101' AND t.status = 'sending'"))
    healthy = stack.pay(amount=50, phone="0722000111", meter="B201")
    assert healthy.status_code == 200, healthy.text

    done = stack.wait_for(healthy.json()["paymentId"], lambda p: p["topUpStatus"] == "APPLIED", timeout=30)
    assert done["unitsAdded"] == 2  # KES 50 at 25/kWh
    # B201 was credited while A101's first attempt was still waiting for its answer.
    a101 = stack.sql("SELECT t.status, t.attempts, t.last_error FROM topups t JOIN meters m ON m.id = t.meter_id "
                     "WHERE m.number = 'A101'")[0]
    assert (a101.status, a101.attempts, a101.last_error) == ("sending", 1, None)

    # And the hanging meter is still credited, exactly once, once it answers again.
    stack.wait_for(hanging.json()["paymentId"], lambda p: p["topUpStatus"] == "APPLIED", timeout=60)
    assert stack.tuya.total_credits("dev-a101") == 100 and stack.tuya.total_credits("dev-b201") == 2


async def test_a_wake_starts_a_job_queued_in_this_process_without_waiting_for_the_poll(engine):
    """poll_s is an hour: only the wake can start the job queued after the worker went idle."""
    ran = asyncio.Event()

    async def quick(payload):
        ran.set()

    worker = Worker(uow_factory=lambda: SqlUnitOfWork(engine), handlers={"quick": quick},
                    clock=FakeClock(datetime.now(UTC)), config=WorkerConfig(worker_id="w", poll_s=3600))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.3)  # it claimed nothing and waits
    await enqueue(engine, 1, kind="quick")
    worker.wake_jobs()
    try:
        await asyncio.wait_for(ran.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
