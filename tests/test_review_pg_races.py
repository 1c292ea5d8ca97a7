"""Review findings that only PostgreSQL shows (READ COMMITTED, row locks instead of one writer).

The interleavings are driven step by step with the production code's own statements; on SQLite the
same steps cannot interleave (BEGIN IMMEDIATE), so these run on PostgreSQL only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.meters.model import Meter
from core.meters.profiles import BUILTIN_PROFILES
from core.payments.model import Channel, Payment, PaymentStatus
from core.payments.service import receive_callback
from core.topups.model import TopUp, TopUpStatus
from core.topups.service import TopUpEngine, TopUpPolicy
from storage.db import create_engine
from storage.uow import SqlUnitOfWork
from tests import samples
from tests.fakes import FakeClock

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
def pg_database(pg_url):
    from tests.conftest import _truncate_pg

    _truncate_pg(pg_url)
    return pg_url


async def _seed(engine) -> None:
    async with SqlUnitOfWork(engine) as uow:
        await uow.meters.add(Meter(id="m1" + "0" * 34, number="A101", name="Flat", device_id="dev-A101", created_at=T0))
        await uow.payments.add(Payment(id="p1" + "0" * 34, amount=500, phone="254712345678", meter_id="m1" + "0" * 34,
                                       channel=Channel.API, created_at=T0, updated_at=T0))
        await uow.commit()


async def _let_run(task, seconds=0.5):
    """Give a concurrent transaction a moment: it either finishes or is blocked on a lock."""
    import asyncio

    await asyncio.wait({task}, timeout=seconds)


async def _wait(event, seconds=0.5):
    import asyncio

    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def test_callback_landing_while_push_answer_is_recorded_is_applied(pg_database):
    """_record_push_accepted (T1) writes the CheckoutRequestID, then looks for orphans, then commits.
    A callback (T2) whose SELECT ... FOR UPDATE runs after T1's UPDATE but before T1's commit does not
    see the uncommitted id (no wait: the old row version does not match) -> stored as an orphan; T1's
    orphan scan ran before T2 committed -> finds nothing. The payment stays pending although M-Pesa
    said paid; only the STK query in reconcile can still save it."""
    import asyncio

    from core.payments.service import _record_push_accepted
    from core.ports import StkPushAccepted

    engine = create_engine(pg_database)
    clock = FakeClock(T0)
    cid = "ws_CO_RACE0001"
    try:
        await _seed(engine)
        callback_task = None
        callback_selected, t1_scanned = asyncio.Event(), asyncio.Event()

        class CallbackUow(SqlUnitOfWork):
            """The callback's transaction: pauses after its payment lookup, before it commits."""

            async def __aenter__(self):
                await super().__aenter__()
                real_set_outcome = self.callbacks.set_outcome

                async def set_outcome(callback_id, **kwargs):
                    callback_selected.set()
                    await _wait(t1_scanned)
                    await real_set_outcome(callback_id, **kwargs)

                self.callbacks.set_outcome = set_outcome
                return self

        class PushUow(SqlUnitOfWork):
            """_record_push_accepted's transaction: the callback arrives right after its UPDATE."""

            async def __aenter__(self):
                await super().__aenter__()
                real_orphans_for = self.callbacks.orphans_for

                async def orphans_for(checkout_request_id):
                    nonlocal callback_task
                    callback_task = asyncio.ensure_future(receive_callback(
                        samples.with_ids(samples.SUCCESS, checkout=cid, amount=500), source="127.0.0.1",
                        uow=CallbackUow(engine), clock=clock, verify=False))
                    await _wait(callback_selected)  # times out if a lock makes the callback wait for us
                    try:
                        return await real_orphans_for(checkout_request_id)
                    finally:
                        t1_scanned.set()

                self.callbacks.orphans_for = orphans_for
                return self

        await _record_push_accepted("p1" + "0" * 34, StkPushAccepted("MR-1", cid, "ok"),
                                    uow=PushUow(engine), clock=clock)
        receipt = await callback_task
        async with SqlUnitOfWork(engine) as uow:
            stored = await uow.payments.get("p1" + "0" * 34)
        assert (receipt.outcome, stored.status) != ("orphan", PaymentStatus.PENDING), \
            "a success callback was orphaned and never applied"
        assert stored.status is PaymentStatus.COMPLETED
    finally:
        await engine.dispose()


async def test_sweep_does_not_clobber_a_concurrent_claim(pg_database):
    """requeue_stale_topups reads stale top-ups without a lock, then writes back the WHOLE row. A claim
    committed in between (queued -> sending, attempts+1, lease, sent_at...) is overwritten: the top-up is
    `queued` again with next_attempt_at=now while its attempt is in the air, and the sweep's new job
    claims it at once -> two sends for one payment."""
    import asyncio

    from core.jobs.worker import RetryLater
    from core.topups.service import requeue_stale_topups

    engine = create_engine(pg_database)
    clock = FakeClock(T0 + timedelta(hours=2))
    try:
        async with SqlUnitOfWork(engine) as uow:
            await uow.meters.add(Meter(id="m1" + "0" * 34, number="A101", name="Flat", device_id="dev-A101", created_at=T0,
                                       dp_specs={"x": {}}))
            await uow.topups.add(TopUp(id="t1" + "0" * 34, meter_id="m1" + "0" * 34, amount=Decimal(500),
                                       created_at=T0, updated_at=T0, next_attempt_at=T0))
            await uow.commit()

        claim_task = None

        class ClaimInBetween(SqlUnitOfWork):
            """The sweep's unit of work; a worker's claim commits right after the sweep's SELECT."""

            async def __aenter__(self):
                await super().__aenter__()
                topups, engine_ = self.topups, self.engine
                real_stale = topups.stale

                async def stale(**kwargs):
                    nonlocal claim_task
                    found = await real_stale(**kwargs)
                    claimer = TopUpEngine(uow=lambda: SqlUnitOfWork(engine_), meters=None, profiles=BUILTIN_PROFILES,
                                          clock=clock, policy=TopUpPolicy())
                    claim_task = asyncio.ensure_future(claimer._claim("t1" + "0" * 34))  # queued -> sending
                    await _let_run(claim_task)
                    return found

                topups.stale = stale
                return self

        await requeue_stale_topups(uow=ClaimInBetween(engine), clock=clock)
        try:
            await claim_task
        except RetryLater:
            pass  # the sweep's lock made the claim wait and see the new schedule: fine
        async with SqlUnitOfWork(engine) as uow:
            topup = await uow.topups.get("t1" + "0" * 34)
        assert topup.status is TopUpStatus.SENDING and topup.attempts == 1, \
            f"the claim was overwritten by the sweep: {topup.status.value}, attempts={topup.attempts}"
    finally:
        await engine.dispose()
