"""Recording Daraja's push answer on SQLite (core/payments/service.py:_record_push_alone): one UPDATE and one
read of orphans, each committed on its own, no transaction. SQLite runs one write transaction at a time, so
a callback for the same CheckoutRequestID is never lost between them: the interleavings, on a real database.
(PostgreSQL keeps the transaction and its advisory lock: tests/test_review_pg_races.py.)"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from core.meters.model import Meter
from core.payments.model import Channel, Payment, PaymentStatus
from core.payments.service import _record_push_accepted, receive_callback
from core.ports import StkPushAccepted
from storage.db import create_engine
from storage.migrate import upgrade
from storage.uow import SqlUnitOfWork
from tests import samples
from tests.fakes import FakeClock

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PAYMENT_ID, CHECKOUT = "p1" + "0" * 34, "ws_CO_SQLITE0001"
ACCEPTED = StkPushAccepted("MR-1", CHECKOUT, "ok")


@pytest.fixture
async def engine(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/push.db"
    upgrade(url)
    engine = create_engine(url)
    async with SqlUnitOfWork(engine) as uow:
        await uow.meters.add(Meter(id="m1" + "0" * 34, number="A101", name="Flat", device_id="dev-A101", created_at=T0))
        await uow.payments.add(claimed())
        await uow.commit()
    yield engine
    await engine.dispose()


def claimed() -> Payment:
    """The payment as the push left it: requested, its push claimed."""
    return Payment(id=PAYMENT_ID, amount=500, phone="254712345678", meter_id="m1" + "0" * 34, channel=Channel.API,
                   created_at=T0, updated_at=T0, pushed_at=T0)


async def paid(engine) -> None:
    body = samples.with_ids(samples.SUCCESS, checkout=CHECKOUT, amount=500)
    return await receive_callback(body, source="127.0.0.1", uow=SqlUnitOfWork(engine), clock=FakeClock(T0), verify=False)


async def stored(engine) -> tuple[Payment, bool]:
    """The payment and whether it has its top-up."""
    async with SqlUnitOfWork(engine) as uow:
        return await uow.payments.get(PAYMENT_ID), await uow.topups.for_payment(PAYMENT_ID) is not None


async def test_the_common_case_is_two_statements_without_a_transaction(engine, sqlite_trips):
    payment = await _record_push_accepted(PAYMENT_ID, ACCEPTED, uow=SqlUnitOfWork(engine), clock=FakeClock(T0),
                                          sent=claimed())
    assert payment.status is PaymentStatus.PENDING and payment.checkout_request_id == CHECKOUT
    assert sqlite_trips == ["_run", "_run"]  # the UPDATE, the orphans' read; a transaction took a third (COMMIT)
    assert (await stored(engine))[0].status is PaymentStatus.PENDING


async def test_a_callback_landing_between_the_update_and_the_orphan_read_applies_itself(engine):
    """In another process (its own connection: this one's is held between the two statements)."""
    other = create_engine(str(engine.url))
    receipts = []

    class CallbackInBetween(SqlUnitOfWork):
        async def __aenter__(self):
            await super().__aenter__()
            real_orphans_for = self.callbacks.orphans_for

            async def orphans_for(checkout_request_id):
                receipts.append(await paid(other))  # nothing of ours holds the writer lock: it runs to the end
                return await real_orphans_for(checkout_request_id)

            self.callbacks.orphans_for = orphans_for
            return self

    try:
        await _record_push_accepted(PAYMENT_ID, ACCEPTED, uow=CallbackInBetween(engine), clock=FakeClock(T0),
                                    sent=claimed())
    finally:
        await other.dispose()
    assert [receipt.outcome for receipt in receipts] == ["completed"]  # it found the payment: no orphan
    payment, topup = await stored(engine)
    assert payment.status is PaymentStatus.COMPLETED and topup


async def test_an_orphan_kept_before_the_update_is_applied_by_the_push_answer(engine):
    assert (await paid(engine)).outcome == "orphan"  # Daraja called back before we knew its CheckoutRequestID
    payment = await _record_push_accepted(PAYMENT_ID, ACCEPTED, uow=SqlUnitOfWork(engine), clock=FakeClock(T0),
                                          sent=replace(claimed()))
    assert payment.status is PaymentStatus.COMPLETED
    assert await stored(engine) == (payment, True)
