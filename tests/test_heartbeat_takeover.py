"""Issue 11 §5: a dead worker is noticed in seconds. A worker's heartbeat renews what it is running; when
the heartbeat stops, its jobs and its top-up attempt are taken over well before their leases end, and
the top-up is resolved by the meter's counter (never a blind resend). A slow but live worker keeps its claim."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from core.jobs.worker import RetryLater, Worker, WorkerConfig
from core.shared.clock import SystemClock
from core.shared.errors import UpstreamError
from core.topups.model import TopUpStatus
from core.topups.service import TopUpEngine, requeue_stale_topups
from storage.heartbeats import Held, SqlHeartbeats
from storage.tables import jobs
from storage.uow import SqlUnitOfWork
from tests.fakes import FakeUnitOfWork
from tests.test_core_topups import add_topup, jobs_of, stored, world  # noqa: F401 (the fixture)


class Killed(BaseException):
    """`kill -9` in the middle of an attempt: nothing after it runs, not even an `except Exception`."""


def kill_during_send(tuya, *, after_applying: bool):
    send = tuya.send_commands

    async def dying(device_id, commands):
        if after_applying:
            await send(device_id, commands)
        raise Killed()

    tuya.send_commands = dying
    return send


def engine_of(world_engine: TopUpEngine, holder: str) -> TopUpEngine:
    return TopUpEngine(uow=world_engine.uow, meters=world_engine.meters, profiles=world_engine.profiles,
                       clock=world_engine.clock, policy=world_engine.policy, sleep=world_engine.sleep, holder=holder)


async def die_mid_attempt(uow, tuya, engine, *, after_applying: bool):
    """Worker "dead" starts the attempt, records its intent, and is killed at the send."""
    dead = engine_of(engine, "dead")
    restore = kill_during_send(tuya, after_applying=after_applying)
    with pytest.raises(Killed):
        await dead.run("t1")
    tuya.send_commands = restore
    held = stored(uow)
    assert held.status is TopUpStatus.SENDING and held.sent_at is not None and held.claimed_by == "dead"
    return held.next_attempt_at  # the lease the dead worker held


async def test_dead_holder_is_taken_over_before_its_lease_and_the_counter_says_applied(world):
    uow, tuya, clock, engine = world
    add_topup(uow)
    lease_until = await die_mid_attempt(uow, tuya, engine, after_applying=True)
    uow.store.heartbeats["dead"] = clock.now()  # its last beat
    clock.advance(engine.policy.holder_silent_s + 1)
    uow.store.heartbeats["w2"] = clock.now()
    assert clock.now() < lease_until  # the old rule would have waited out the lease
    assert await engine_of(engine, "w2").run("t1") is TopUpStatus.APPLIED
    assert len(tuya.sent) == 1 and stored(uow).claimed_by is None  # verified by the counter, not resent
    assert stored(uow).applied_at < lease_until


async def test_dead_holder_whose_charge_never_landed_is_sent_once_after_the_counter_check(world):
    uow, tuya, clock, engine = world
    add_topup(uow)
    await die_mid_attempt(uow, tuya, engine, after_applying=False)
    uow.store.heartbeats["dead"] = clock.now()
    clock.advance(engine.policy.holder_silent_s + 1)
    assert await engine_of(engine, "w2").run("t1") is TopUpStatus.APPLIED
    assert len(tuya.sent) == 1 and tuya.meters["dev-A101"].status_values()["balance"] == 60000


async def test_live_holder_keeps_its_claim_and_a_duplicate_job_asks_again_soon(world):
    uow, tuya, clock, engine = world
    add_topup(uow)
    await die_mid_attempt(uow, tuya, engine, after_applying=True)
    clock.advance(engine.policy.holder_silent_s + 1)
    uow.store.heartbeats["dead"] = clock.now()  # it still beats: slow, not dead
    with pytest.raises(RetryLater) as later:
        await engine_of(engine, "w2").run("t1")
    assert later.value.delay_s <= engine.policy.holder_silent_s  # not the rest of a 180 s lease
    assert stored(uow).claimed_by == "dead" and stored(uow).status is TopUpStatus.SENDING


async def test_holder_without_any_heartbeat_keeps_the_lease_as_the_backstop(world):
    uow, tuya, clock, engine = world
    add_topup(uow)
    lease_until = await die_mid_attempt(uow, tuya, engine, after_applying=True)
    clock.advance(60)
    with pytest.raises(RetryLater):
        await engine_of(engine, "w2").run("t1")  # a one-off run with no heartbeat row: not known dead
    clock.advance((lease_until - clock.now()).total_seconds() + 2)
    assert await engine_of(engine, "w2").run("t1") is TopUpStatus.APPLIED and len(tuya.sent) == 1


async def test_sweep_requeues_a_silent_workers_top_up_and_releases_it(world):
    uow, tuya, clock, engine = world
    add_topup(uow)
    await die_mid_attempt(uow, tuya, engine, after_applying=True)
    uow.store.heartbeats["dead"] = clock.now()
    clock.advance(5)
    assert await requeue_stale_topups(uow=FakeUnitOfWork(uow.store), clock=clock, holder_silent_s=15) == []
    clock.advance(11)
    assert await requeue_stale_topups(uow=FakeUnitOfWork(uow.store), clock=clock, holder_silent_s=15) == ["t1"]
    assert stored(uow).claimed_by is None and stored(uow).next_attempt_at == clock.now()
    assert [j.payload for j in jobs_of(uow, "topup")] == [{"topup_id": "t1"}]
    assert await engine_of(engine, "w2").run("t1") is TopUpStatus.APPLIED and len(tuya.sent) == 1


# --- the job queue, on both engines ------------------------------------------------------------------


async def claim(engine, worker: str, **options):
    async with SqlUnitOfWork(engine) as uow:
        jobs = await uow.jobs.claim(["t"], worker=worker, lease_s=120, limit=5, **options)
        await uow.commit()
    return jobs


async def test_a_silent_workers_running_job_is_claimed_before_its_lease_ends(engine):
    async with SqlUnitOfWork(engine) as uow:
        await uow.jobs.enqueue("t", {})
        await uow.commit()
    beats = SqlHeartbeats(engine)
    now = datetime.now(UTC)
    await beats.beat("dead", now - timedelta(seconds=30))
    [job] = await claim(engine, "dead")
    await beats.beat("live", now)
    assert await claim(engine, "live") == []  # without the heartbeat rule: the 120 s lease
    [again] = await claim(engine, "live", silent_after_s=15)
    assert again.id == job.id and again.attempts == 2
    async with engine.connect() as conn:
        row = (await conn.execute(sa.text("SELECT locked_by, lease_until FROM jobs"))).one()
    assert row.locked_by == "live"


async def test_a_live_workers_beat_renews_only_the_jobs_it_still_runs(engine):
    async with SqlUnitOfWork(engine) as uow:
        for _ in range(2):
            await uow.jobs.enqueue("t", {})
        await uow.commit()
    beats = SqlHeartbeats(engine)
    start = datetime.now(UTC)
    await beats.beat("w1", start)
    running, finished = await claim(engine, "w1")
    later = start + timedelta(seconds=100)
    await beats.beat("w1", later, Held(job_ids=[running.id], job_lease_s=120))
    assert await claim(engine, "w2", silent_after_s=15) == []  # w1 beats: its claims stand
    async with engine.connect() as conn:
        leases = dict((await conn.execute(sa.select(jobs.c.id, jobs.c.lease_until))).all())
    assert leases[running.id] == later + timedelta(seconds=120)  # renewed from the beat
    assert leases[finished.id] < leases[running.id]  # a job the worker no longer runs keeps its old lease


async def test_a_slow_job_keeps_its_claim_while_its_worker_beats(engine):
    """A job that runs longer than its lease, in a worker that beats: nobody else takes it."""
    async with SqlUnitOfWork(engine) as uow:
        await uow.jobs.enqueue("t", {})
        await uow.commit()
    beats, release, taken = SqlHeartbeats(engine), asyncio.Event(), []

    async def slow(_payload):
        # Past the lease several times over, while another worker keeps trying to claim.
        for _ in range(6):
            taken.extend(await claim(engine, "other", silent_after_s=1.0))
            await asyncio.sleep(0.3)
        release.set()

    async def beat(worker, at, job_ids):
        await beats.beat(worker, at, Held(job_ids=job_ids, job_lease_s=0.5))

    worker = Worker(uow_factory=lambda: SqlUnitOfWork(engine), handlers={"t": slow}, clock=SystemClock(),
                    heartbeat=beat, config=WorkerConfig(worker_id="slow", lease_s=0.5, heartbeat_every_s=0.1,
                                                        silent_after_s=1.0, poll_s=0.05))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(release.wait(), 30)
    stop.set()
    await task
    assert taken == []
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT status, attempts FROM jobs"))).one() == ("done", 1)


async def test_a_worker_taken_over_while_cut_off_cannot_write_back_its_stale_copy(world):
    """Fencing: "slow" sends, is cut off past the silence limit, "w2" takes over and applies by the counter;
    when "slow" comes back its save is refused (ClaimLost) and the books keep w2's applied top-up."""
    uow, tuya, clock, engine = world
    add_topup(uow)
    send = tuya.send_commands
    taken_over = {}

    async def cut_off_after_sending(device_id, commands):
        await send(device_id, commands)
        uow.store.heartbeats["slow"] = clock.now()
        clock.advance(engine.policy.holder_silent_s + 1)
        uow.store.heartbeats["w2"] = clock.now()
        tuya.send_commands = send
        taken_over["status"] = await engine_of(engine, "w2").run("t1")  # while "slow" is stuck
        raise UpstreamError("the Tuya cloud did not answer in time", transient=True)  # "slow" resumes, stale

    tuya.send_commands = cut_off_after_sending
    with pytest.raises(RetryLater):
        await engine_of(engine, "slow").run("t1")
    assert taken_over["status"] is TopUpStatus.APPLIED
    held = stored(uow)
    assert held.status is TopUpStatus.APPLIED and held.claimed_by is None and len(tuya.sent) == 1
