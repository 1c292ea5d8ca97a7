"""The callback inbox: kept bodies committed before the answer, many requests per commit, and applied
exactly once whoever applies them (the request itself, any number of draining workers, a restart).
On both engines, through the production storage."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from core.meters.model import Meter
from core.payments.model import Channel, Payment, PaymentStatus
from core.payments.service import apply_received_callbacks, receive_callback
from storage.inbox import GroupCommitInbox
from storage.tables import mpesa_callbacks, payments, topups
from storage.uow import SqlUnitOfWork
from tests import samples
from tests.fakes import FakeClock
from tests.stack import Stack

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
METER_ID = "m1" + "0" * 34


def paid(n: int, *, amount: int = 100) -> bytes:
    return json.dumps({"Body": {"stkCallback": {
        "MerchantRequestID": f"MR-{n}", "CheckoutRequestID": f"ws_CO_INBOX{n:04d}", "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": amount}, {"Name": "MpesaReceiptNumber",
                                       "Value": f"INB{n:07d}"}, {"Name": "TransactionDate", "Value": 20261127090000},
                                      {"Name": "PhoneNumber", "Value": 254712345678}]}}}}).encode()


async def seed(engine, count: int) -> None:
    async with SqlUnitOfWork(engine) as uow:
        await uow.meters.add(Meter(id=METER_ID, number="A101", name="Flat", device_id="dev-A101", created_at=T0))
        for n in range(count):
            await uow.payments.add(Payment(
                id=f"p{n:04d}" + "0" * 31, amount=100, phone=f"2547123456{n:02d}", meter_id=METER_ID, channel=Channel.API,
                created_at=T0, updated_at=T0, status=PaymentStatus.PENDING, checkout_request_id=f"ws_CO_INBOX{n:04d}"))
        await uow.commit()


async def rows(engine, query) -> list:
    async with engine.connect() as conn:
        return list(await conn.execute(query))


async def test_concurrent_callbacks_share_commits_and_each_gets_its_own_row(engine):
    inbox = GroupCommitInbox(engine)
    statements: list[str] = []
    sa.event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    bodies = [f'{{"n": {n}}}' for n in range(120)]
    ids = await asyncio.gather(*(inbox.keep(body=body, source="196.201.214.200", received_at=T0) for body in bodies))
    assert len(set(ids)) == 120
    # One INSERT per shared commit, not one per row (SQLite fell back to that with an ordered RETURNING).
    assert len([s for s in statements if s.startswith("INSERT")]) == inbox.batches
    stored = dict(await rows(engine, sa.select(mpesa_callbacks.c.id, mpesa_callbacks.c.body)))
    assert [stored[i] for i in ids] == bodies  # each caller got the id of its own body
    assert inbox.rows == 120 and inbox.batches < 120  # commits were shared, not one per request


async def test_a_failed_commit_fails_every_caller_in_it_and_the_next_batch_still_works(engine):
    inbox = GroupCommitInbox(engine)
    too_long = "x" * 65  # source is VARCHAR(64): PostgreSQL refuses the whole INSERT; SQLite keeps it
    results = await asyncio.gather(inbox.keep(body="{}", source=None, received_at=T0),
                                   inbox.keep(body="{}", source=too_long, received_at=T0), return_exceptions=True)
    kept = await rows(engine, sa.select(mpesa_callbacks.c.id))
    if engine.dialect.name == "postgresql":
        assert all(isinstance(result, Exception) for result in results[1:])  # nobody is told "kept" wrongly
    assert len(kept) == sum(isinstance(result, int) for result in results)
    assert isinstance(await inbox.keep(body="{}", source=None, received_at=T0), int)


async def test_a_rush_answered_before_applying_is_applied_once_by_concurrent_drains(engine):
    """Every payment's success arrives three times; the requests keep them without applying (a rush);
    three workers drain at once. Each payment completes once with one top-up, each callback ends with
    a final outcome, and nothing stays in the inbox."""
    await seed(engine, 20)
    clock = FakeClock(T0)

    def uow():
        return SqlUnitOfWork(engine, GroupCommitInbox(engine))

    receipts = await asyncio.gather(*(receive_callback(paid(n % 20), source=None, uow=uow(), clock=clock, verify=False,
                                                       apply_now=False) for n in range(60)))
    assert {receipt.outcome for receipt in receipts} == {"queued"}
    assert (await rows(engine, sa.select(sa.func.count()).select_from(topups)))[0][0] == 0  # nothing applied yet

    async def drain_all() -> None:
        while await apply_received_callbacks(uow, clock=clock, verify=False, limit=7):
            pass

    await asyncio.gather(drain_all(), drain_all(), drain_all())
    statuses = await rows(engine, sa.select(payments.c.status))
    assert [status for (status,) in statuses] == ["completed"] * 20
    per_payment = await rows(engine, sa.select(topups.c.payment_id, sa.func.count()).group_by(topups.c.payment_id))
    assert len(per_payment) == 20 and {n for _, n in per_payment} == {1}
    outcomes = [outcome for (outcome,) in await rows(engine, sa.select(mpesa_callbacks.c.outcome))]
    assert outcomes.count("completed") == 20 and outcomes.count("received") == 0
    assert len(outcomes) == 60


async def test_a_callback_applied_by_its_request_is_not_applied_again_by_a_drain(engine):
    await seed(engine, 1)
    clock = FakeClock(T0)
    receipt = await receive_callback(paid(0), source=None, uow=SqlUnitOfWork(engine), clock=clock, verify=False)
    assert receipt.outcome == "completed"
    assert await apply_received_callbacks(lambda: SqlUnitOfWork(engine), clock=clock, verify=False) == 0
    assert len(await rows(engine, sa.select(topups.c.id))) == 1


async def test_a_callback_kept_by_a_process_that_died_is_applied_by_the_next_drain(engine):
    """The request committed the body and then its process died: the row is `received`, which is all a
    worker needs (the body is the whole callback)."""
    await seed(engine, 1)
    async with engine.begin() as conn:
        await conn.execute(mpesa_callbacks.insert().values(body=paid(0).decode(), received_at=T0, outcome="received"))
    assert await apply_received_callbacks(lambda: SqlUnitOfWork(engine), clock=FakeClock(T0), verify=False) == 1
    assert (await rows(engine, sa.select(payments.c.status)))[0][0] == "completed"
    assert (await rows(engine, sa.select(mpesa_callbacks.c.outcome, mpesa_callbacks.c.checkout_request_id)))[0] == \
        ("completed", "ws_CO_INBOX0000")


async def test_a_malformed_body_left_received_by_an_older_version_is_marked_not_retried(engine):
    async with engine.begin() as conn:
        await conn.execute(mpesa_callbacks.insert().values(body="{not json", received_at=T0, outcome="received"))
    drain = lambda: apply_received_callbacks(lambda: SqlUnitOfWork(engine), clock=FakeClock(T0), verify=False)  # noqa: E731
    assert await drain() == 1
    assert await drain() == 0
    assert (await rows(engine, sa.select(mpesa_callbacks.c.outcome)))[0][0] == "malformed"


@pytest.fixture
def pg_database(pg_url):
    from tests.conftest import _truncate_pg

    _truncate_pg(pg_url)
    return pg_url


@pytest.mark.postgres
async def test_a_drain_skips_a_callback_another_worker_holds_and_does_not_wait(pg_database):
    from storage.db import create_engine

    engine = create_engine(pg_database)
    try:
        await seed(engine, 1)
        async with engine.begin() as conn:
            await conn.execute(mpesa_callbacks.insert().values(body=paid(0).decode(), received_at=T0, outcome="received"))
        async with SqlUnitOfWork(engine) as holder:
            assert await holder.callbacks.claim_received(1, wait=False) is not None  # another worker applying it
            listed = await asyncio.wait_for(apply_received_callbacks(lambda: SqlUnitOfWork(engine), clock=FakeClock(T0),
                                                                     verify=False), timeout=5)
            assert listed == 1
            assert (await rows(engine, sa.select(payments.c.status)))[0][0] == "pending"  # skipped, not applied
    finally:
        await engine.dispose()


# --- over HTTP, as Daraja sends them ------------------------------------------------------------------


def test_a_callback_answered_before_it_is_applied_credits_the_meter_right_after(database_url):
    """CALLBACK_APPLY_INLINE_MAX=0: every callback is treated as part of a rush. The answer comes once
    the body is kept; this process's worker, woken by the handler, applies it and tops the meter up."""
    stack = Stack(database_url, callback_apply_inline_max=0)
    try:
        stack.daraja.script_phone("254712345678", "lost_callback")
        body = stack.pay(amount=100).json()
        raw = samples.with_ids(samples.SUCCESS, checkout=body["checkoutRequestId"], amount=100.0)
        assert httpx.post(stack.callback_url, content=raw).json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
        done = stack.wait_for(body["paymentId"], lambda p: p["topUpStatus"] == "APPLIED")
        assert done["status"] == "COMPLETED"
        assert [r.outcome for r in stack.sql("SELECT outcome FROM mpesa_callbacks")] == ["completed"]
        assert 'lipameter_mpesa_callbacks_total{outcome="queued"} 1.0' in httpx.get(f"{stack.url}/metrics").text
    finally:
        stack.stop()


def test_a_callback_kept_while_no_worker_runs_is_applied_when_one_starts(database_url):
    stack = Stack(database_url, callback_apply_inline_max=0, run_worker=False)
    try:
        stack.daraja.script_phone("254712345678", "lost_callback")
        body = stack.pay(amount=100).json()
        raw = samples.with_ids(samples.SUCCESS, checkout=body["checkoutRequestId"], amount=100.0)
        assert httpx.post(stack.callback_url, content=raw).status_code == 200
        assert [r.outcome for r in stack.sql("SELECT outcome FROM mpesa_callbacks")] == ["received"]
        assert stack.payment(body["paymentId"])["status"] == "PENDING"
        assert "lipameter_callbacks_waiting 1.0" in httpx.get(f"{stack.url}/metrics").text  # what to watch
        stack.restart_app()  # with its worker
        assert stack.wait_for(body["paymentId"], lambda p: p["topUpStatus"] == "APPLIED")["status"] == "COMPLETED"
    finally:
        stack.stop()
