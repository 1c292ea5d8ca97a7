"""Workers die and multiply: a real worker process killed with SIGKILL between sending a charge and
recording it, and two workers on one database, never credit a shilling twice."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from core.admin.operator import Actor, manual_topup
from tests.stack import Stack, settings_env
from web.bootstrap import build_container

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_worker(stack: Stack, **overrides) -> subprocess.Popen:
    env = settings_env(stack.settings, job_lease_s=1, topup_attempt_lease_s=1, sweep_every_s=0.5, **overrides)
    return subprocess.Popen([sys.executable, "-m", "web.cli", "worker"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def start_beating_worker(stack: Stack, **overrides) -> subprocess.Popen:
    """A worker with the production leases (120 s jobs, 180 s top-up attempts) and a quick heartbeat:
    only the heartbeat can let another worker in early."""
    env = settings_env(stack.settings, job_lease_s=120, topup_attempt_lease_s=180, worker_heartbeat_s=0.5,
                       worker_silent_after_s=2, sweep_every_s=0.5, **overrides)
    return subprocess.Popen([sys.executable, "-m", "web.cli", "worker"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def as_utc(value) -> datetime:
    """A timestamp read back through raw SQL: a datetime (PostgreSQL) or ISO text (SQLite)."""
    value = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def wait_until(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_worker_killed_after_sending_credits_once(database_url):
    stack = Stack(database_url, run_worker=False)
    first = second = None
    try:
        answer = stack.pay(amount=400)
        ref = answer.json()["paymentId"]
        stack.wait_for(ref, lambda p: p["status"] == "COMPLETED")  # the app takes the callback; no worker yet
        # The meter applies the charge, then the answer hangs: the worker is blocked right after sending.
        stack.tuya.set_fault("dev-a101", "apply_lose_answer", n=1, seconds=60)
        first = start_worker(stack, tuya_timeout_s=30)
        wait_until(lambda: stack.tuya.total_credits("dev-a101") == 400, what="the charge to reach the meter")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        row = stack.sql("SELECT status, sent_at FROM topups")[0]
        assert row.status == "sending" and row.sent_at is not None  # the intent was recorded first
        stack.tuya.clear_faults("dev-a101")
        second = start_worker(stack, tuya_timeout_s=2)
        done = stack.wait_for(ref, lambda p: p["topUpStatus"] == "APPLIED", timeout=30)
        assert stack.tuya.total_credits("dev-a101") == 400  # verified by the counter, not resent
        assert (done["balanceBefore"], done["balanceAfter"]) == (100, 500)
    finally:
        for process in (first, second):
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(10)
        stack.stop()


def test_worker_killed_mid_attempt_is_taken_over_long_before_its_leases_end(database_url):
    """Issue 11 §5: `kill -9` mid-attempt. Its heartbeat stops, so another worker takes over its job and
    its top-up within seconds, not at the 120 s / 180 s leases; the counter shows the charge: no resend."""
    stack = Stack(database_url, run_worker=False)
    first = second = None
    try:
        ref = stack.pay(amount=400).json()["paymentId"]
        stack.wait_for(ref, lambda p: p["status"] == "COMPLETED")
        stack.tuya.set_fault("dev-a101", "apply_lose_answer", n=1, seconds=60)  # applied, then the answer hangs
        first = start_beating_worker(stack, tuya_timeout_s=30)
        wait_until(lambda: stack.tuya.total_credits("dev-a101") == 400, what="the charge to reach the meter")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        held = stack.sql("SELECT status, sent_at, claimed_by, next_attempt_at FROM topups")[0]
        job = stack.sql("SELECT id, locked_by, lease_until FROM jobs WHERE kind = 'topup' AND status = 'running'")[0]
        assert held.status == "sending" and held.sent_at is not None
        assert held.claimed_by == job.locked_by  # the dead worker's id, on both of its claims
        topup_lease, job_lease = as_utc(held.next_attempt_at), as_utc(job.lease_until)
        assert topup_lease - as_utc(held.sent_at) > timedelta(seconds=170)  # the attempt lease, in force
        stack.tuya.clear_faults("dev-a101")
        second = start_beating_worker(stack, tuya_timeout_s=2)
        done = stack.wait_for(ref, lambda p: p["topUpStatus"] == "APPLIED", timeout=60)
        assert stack.tuya.total_credits("dev-a101") == 400  # exactly once: verified by the counter
        assert (done["balanceBefore"], done["balanceAfter"]) == (100, 500)
        topup = stack.sql("SELECT applied_at, claimed_by FROM topups")[0]
        # The sweep's own job for the orphaned top-up may apply it first; the dead one's job, taken over
        # meanwhile, then finds it applied. Either way it is done within seconds, long before its lease.
        wait_until(lambda: stack.sql("SELECT status FROM jobs WHERE id = :id", id=job.id)[0].status == "done",
                   what="the dead worker's job to be taken over and done")
        taken = stack.sql("SELECT status, locked_by, updated_at FROM jobs WHERE id = :id", id=job.id)[0]
        assert as_utc(topup.applied_at) < topup_lease and topup.claimed_by is None  # not after the lease
        assert taken.status == "done" and taken.locked_by not in (None, job.locked_by)  # the dead one's job
        assert as_utc(taken.updated_at) < job_lease
    finally:
        for process in (first, second):
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(10)
        stack.stop()


@pytest.mark.postgres
async def test_two_workers_keep_one_top_up_in_flight_per_meter(pg_url):
    from tests.conftest import _truncate_pg

    await asyncio.to_thread(_truncate_pg, pg_url)
    stack = await asyncio.to_thread(Stack, pg_url, run_worker=False, topup_backoff_s="0.2")
    containers = [build_container(stack.settings, worker_id=f"w{i}") for i in range(2)]
    stop = asyncio.Event()
    try:
        stack.tuya.set_fault("dev-a101", "slow", n=None, seconds=0.2)  # widen every window
        for amount in (50, 60, 70, 80):
            await manual_topup("A101", amount, "load test", actor=Actor("test"), uow=containers[0].uow(),
                               profiles=containers[0].profiles, clock=containers[0].clock)
        tasks = [asyncio.create_task(c.worker.run(stop)) for c in containers]
        deadline = time.monotonic() + 60
        while True:
            async with containers[0].engine.connect() as conn:
                left = await conn.scalar(sa.text("SELECT count(*) FROM topups WHERE status <> 'applied'"))
            if left == 0:
                break
            assert time.monotonic() < deadline, "top-ups did not all apply"
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)
        async with containers[0].engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT sent_at, applied_at FROM topups ORDER BY sent_at"))).all()
        for earlier, later in itertools.pairwise(rows):
            assert earlier.applied_at <= later.sent_at  # never two charges in the air for one meter
        assert stack.tuya.total_credits("dev-a101") == Decimal(260)
    finally:
        stop.set()
        for c in containers:
            await c.aclose()
        await asyncio.to_thread(stack.stop)


def test_serve_starts_answers_and_stops_cleanly(tmp_path, sqlite_template):
    """`lipameter serve` as an operator runs it: real settings from the environment, then SIGTERM."""
    import shutil

    from tests.servers import reserve_port

    shutil.copy(sqlite_template, tmp_path / "serve.db")
    stack = Stack(f"sqlite+aiosqlite:///{tmp_path}/serve.db", run_worker=False)
    port = reserve_port()
    env = settings_env(stack.settings, public_base_url=f"http://127.0.0.1:{port}")
    server = subprocess.Popen([sys.executable, "-m", "web.cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, what="lipameter serve to answer")
        paid = httpx.post(f"http://127.0.0.1:{port}/mpesa/payments", timeout=10,
                          headers={"Authorization": f"Bearer {stack.settings.api_key_list[-1]}"},
                          json={"amount": 50, "phoneNumber": "0712345678", "meterId": "A101"})
        assert paid.status_code == 200, paid.text
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why it stopped.
        assert server.wait(20) in (0, -signal.SIGTERM)
        logs = server.stderr.read()
        assert "Finished server process" in logs and "worker" in logs and "stopped" in logs
        assert stack.settings.callback_token.get_secret_value() not in logs  # secrets stay out of logs
        assert stack.settings.daraja_consumer_secret.get_secret_value() not in logs
    finally:
        if server.poll() is None:
            server.kill()
        stack.stop()
