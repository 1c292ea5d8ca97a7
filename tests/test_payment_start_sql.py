"""Payment start on both engines: the payment written without a transaction around its one INSERT, the
push's answer in one guarded UPDATE, and what happens when the row moved on in between."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from core.meters.model import Meter
from core.payments.model import Channel, Payment, PaymentStatus
from core.payments.service import InitiatePayment, PaymentLimits, _record_push_accepted, initiate_payment
from core.ports import StkPushAccepted
from storage.uow import SqlUnitOfWork
from tests.fakes import FakeClock, FakeDaraja

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
METER = "m1" + "0" * 34
PAY = "p1" + "0" * 34


async def _seed(engine, *, with_payment: bool = True) -> None:
    async with SqlUnitOfWork(engine) as uow:
        await uow.meters.add(Meter(id=METER, number="A101", name="Flat", device_id="dev-A101", created_at=T0))
        if with_payment:
            await uow.payments.add(Payment(id=PAY, amount=500, phone="254712345678", meter_id=METER,
                                           channel=Channel.API, created_at=T0, updated_at=T0, pushed_at=T0))
        await uow.commit()


async def _stored(engine) -> Payment:
    async with SqlUnitOfWork(engine) as uow:
        return await uow.payments.get(PAY)


class Transactions:
    """Counts the transactions begun on an engine (SQLite's BEGIN IMMEDIATE and PostgreSQL's BEGIN both
    go through SQLAlchemy's `begin` event; an autocommit connection begins none)."""

    def __init__(self, engine) -> None:
        self.begun = 0
        sa.event.listen(engine.sync_engine, "begin", self._begin)

    def _begin(self, conn) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT" and \
                not conn.get_execution_options().get("lipameter_one_statement"):
            self.begun += 1


async def test_api_payment_start_opens_one_transaction(engine):
    await _seed(engine, with_payment=False)
    transactions = Transactions(engine)
    started = await initiate_payment(
        InitiatePayment(amount=500, phone="0712345678", meter_ref="A101", idempotency_key="k-1"),
        uow=SqlUnitOfWork(engine), gateway=FakeDaraja(), limits=PaymentLimits(), clock=FakeClock(T0))
    assert started.payment.status is PaymentStatus.PENDING
    # The payment itself is one autocommitted INSERT; the push's answer a transaction on PostgreSQL, and on
    # SQLite (one writer at a time) an UPDATE and a read committed on their own (tests/test_push_record_sqlite.py).
    assert transactions.begun == (0 if engine.dialect.name == "sqlite" else 1)
    async with SqlUnitOfWork(engine) as uow:
        stored = await uow.payments.get_by_idempotency_key("k-1")
    assert stored.status is PaymentStatus.PENDING and stored.checkout_request_id == started.payment.checkout_request_id


async def test_autocommit_keeps_writes_without_commit_and_only_once(engine):
    await _seed(engine, with_payment=False)
    uow = SqlUnitOfWork(engine)
    async with uow.autocommit():
        await uow.payments.add(Payment(id=PAY, amount=500, phone="254712345678", meter_id=METER,
                                       channel=Channel.API, created_at=T0, updated_at=T0))
    assert (await _stored(engine)).amount == 500  # committed by the statement itself
    async with uow:  # the next one is a transaction again: no commit, no write
        payment = await uow.payments.get(PAY)
        payment.description = "changed"
        await uow.payments.save(payment)
    assert (await _stored(engine)).description == ""


async def test_a_save_writes_what_a_payment_s_life_changes_never_what_was_set_once(engine):
    """SQLite rewrites the entry of every index on a column an UPDATE assigns, changed or not: a save
    assigns only the columns a payment's life changes (a third cheaper a row on SQLite, measured)."""
    await _seed(engine)
    updates: list[str] = []
    sa.event.listen(engine.sync_engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *rest: updates.append(statement) if statement.startswith("UPDATE") else None)
    async with SqlUnitOfWork(engine) as uow:
        payment = await uow.payments.get(PAY)
        payment.status, payment.mpesa_receipt, payment.updated_at = PaymentStatus.COMPLETED, "RCP1", T0.replace(hour=10)
        await uow.payments.save(payment)
        await uow.commit()
    stored = await _stored(engine)
    assert (stored.status, stored.mpesa_receipt, stored.updated_at) == (PaymentStatus.COMPLETED, "RCP1", T0.replace(hour=10))
    [update] = updates
    assigned = {part.split("=")[0].strip() for part in update.split(" SET ", 1)[1].split(" WHERE ", 1)[0].split(",")}
    assert {"status", "mpesa_receipt", "updated_at"} <= assigned
    assert assigned.isdisjoint({"id", "amount", "phone", "meter_id", "channel", "idempotency_key", "created_at"})


async def test_save_if_writes_only_while_the_row_has_the_status(engine):
    await _seed(engine)
    sent = await _stored(engine)
    async with SqlUnitOfWork(engine) as uow:
        moved = replace(sent, status=PaymentStatus.NEEDS_REVIEW, review_reason="reconcile")
        assert await uow.payments.save_if(moved, was=PaymentStatus.REQUESTED)
        again = replace(sent, status=PaymentStatus.PENDING, checkout_request_id="ws_CO_1")
        assert not await uow.payments.save_if(again, was=PaymentStatus.REQUESTED)
        await uow.commit()
    stored = await _stored(engine)
    assert stored.status is PaymentStatus.NEEDS_REVIEW and stored.checkout_request_id is None


async def test_push_answer_is_recorded_from_the_sent_payment(engine):
    await _seed(engine)
    sent = await _stored(engine)
    payment = await _record_push_accepted(PAY, StkPushAccepted("MR-1", "ws_CO_1", "ok"), uow=SqlUnitOfWork(engine),
                                          clock=FakeClock(T0), sent=sent)
    stored = await _stored(engine)
    assert payment.status is stored.status is PaymentStatus.PENDING
    assert (stored.merchant_request_id, stored.checkout_request_id) == ("MR-1", "ws_CO_1")


async def test_push_answer_after_reconcile_sent_it_to_review_keeps_the_review(engine):
    """The copy the push carries is stale: the guarded write refuses it, the row is read again, and the
    review stays, with Daraja's ids kept so that its callback is linked."""
    await _seed(engine)
    sent = await _stored(engine)
    async with SqlUnitOfWork(engine) as uow:
        await uow.payments.save(replace(sent, status=PaymentStatus.NEEDS_REVIEW, review_reason="no answer in time"))
        await uow.commit()
    payment = await _record_push_accepted(PAY, StkPushAccepted("MR-1", "ws_CO_1", "ok"), uow=SqlUnitOfWork(engine),
                                          clock=FakeClock(T0), sent=sent)
    stored = await _stored(engine)
    assert payment.status is stored.status is PaymentStatus.NEEDS_REVIEW
    assert stored.review_reason == "no answer in time"
    assert (stored.merchant_request_id, stored.checkout_request_id) == ("MR-1", "ws_CO_1")


async def test_sqlite_connection_returned_in_a_transaction_is_rolled_back(tmp_path, sqlite_template, monkeypatch):
    """The pool's reset is storage.db's: a connection given back with SQLite's transaction still open (the
    writer lock held) is rolled back; one given back after COMMIT is not sent a ROLLBACK for nothing."""
    import shutil

    import aiosqlite

    from storage.db import create_engine

    path = tmp_path / "reset.db"
    shutil.copy(sqlite_template, path)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    rollbacks = 0
    real_rollback = aiosqlite.Connection.rollback

    async def counted(self):
        nonlocal rollbacks
        rollbacks += 1
        return await real_rollback(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)
    try:
        await _seed(engine, with_payment=False)  # the first connection's setup rolls back once
        rollbacks = 0
        async with SqlUnitOfWork(engine) as uow:
            await uow.meters.get(METER)
            await uow.commit()
        assert rollbacks == 0  # committed: nothing to roll back on return
        async with engine.connect() as conn:  # a transaction the Connection does not know about
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.execute("BEGIN IMMEDIATE")
            await driver.execute("UPDATE meters SET name = 'half-done'")
        assert rollbacks == 1
        async with SqlUnitOfWork(engine) as uow:  # the writer lock is free again, the write undone
            assert (await uow.meters.get(METER)).name == "Flat"
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_pool_keeps_the_connections_a_burst_opened(pg_url):
    """A burst's connections stay open for the next one (an overflow connection was closed on return and
    opened again, ~3 ms of the event loop and a server process each), and no more than before are opened."""
    import asyncio

    from storage.db import PG_POOL_SIZE, create_engine

    engine = create_engine(pg_url)
    try:
        held = asyncio.Event()

        async def hold() -> None:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
                await held.wait()

        burst = [asyncio.create_task(hold()) for _ in range(PG_POOL_SIZE + 5)]
        while engine.pool.checkedout() < PG_POOL_SIZE:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert engine.pool.checkedout() == PG_POOL_SIZE == 20  # the rest wait in the pool's queue
        held.set()
        await asyncio.gather(*burst)
        assert engine.pool.checkedin() == PG_POOL_SIZE
    finally:
        await engine.dispose()
