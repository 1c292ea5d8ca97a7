"""Issue 11 §4, first hole: the raw callback is stored before anything can fail, on both engines.

Hostile or odd bodies (a CheckoutRequestID over 64 characters, a long receipt or ResultDesc, a
30-digit amount, a lone surrogate, a NUL byte, one receipt on two payments) used to raise inside the
callback's transaction: 500, rollback, body lost, payment left pending. Now each is kept, then
marked malformed or sent to a person, and nothing answers 5xx.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from core.meters.model import Meter
from core.payments.model import PaymentStatus
from core.payments.service import InitiatePayment, PaymentLimits, initiate_payment, receive_callback
from core.shared.errors import InvalidInput
from storage.tables import mpesa_callbacks, payments, topups
from storage.uow import SqlUnitOfWork
from tests import samples
from tests.fakes import FakeClock, FakeDaraja

LIMITS = PaymentLimits(min_amount=10, max_amount=70_000)


class World:
    def __init__(self, engine) -> None:
        self.engine, self.daraja, self.clock = engine, FakeDaraja(), FakeClock()

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine)

    async def pay(self, phone: str = "0712345678"):
        started = await initiate_payment(InitiatePayment(amount=500, phone=phone, meter_ref="A101"),
                                         uow=self.uow(), gateway=self.daraja, limits=LIMITS, clock=self.clock)
        return started.payment

    async def callback(self, body: bytes):
        return await receive_callback(body, source="196.201.214.200", uow=self.uow(), clock=self.clock, verify=False)

    async def rows(self, table, *where):
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(sa.select(table).where(*where))]

    async def payment(self, payment_id: str) -> dict:
        [row] = await self.rows(payments, payments.c.id == payment_id)
        return row


@pytest.fixture
async def world(engine):
    world = World(engine)
    async with world.uow() as uow:
        await uow.meters.add(Meter(id="m1", number="A101", name="Flat A1", device_id="dev1",
                                    created_at=world.clock.now()))
        await uow.commit()
    return world


def success(checkout: str, *, receipt: object = "NLJ7RT61SV", amount: object = 500, desc: str | None = None) -> bytes:
    doc = json.loads(samples.with_ids(samples.SUCCESS, checkout=checkout, amount=500))
    stk = doc["Body"]["stkCallback"]
    for item in stk["CallbackMetadata"]["Item"]:
        if item["Name"] == "MpesaReceiptNumber":
            item["Value"] = receipt
        if item["Name"] == "Amount":
            item["Value"] = amount
    if desc is not None:
        stk["ResultDesc"] = desc
    return json.dumps(doc).encode()


def raw_amount(checkout: str, literal: str) -> bytes:
    """JSON with an amount no float can hold (json.dumps would round it)."""
    return success(checkout, amount=123).replace(b'"Value": 123', f'"Value": {literal}'.encode())


async def test_long_checkout_id_is_kept_and_marked_malformed(world):
    payment = await world.pay()
    body = samples.with_ids(samples.SUCCESS, checkout=payment.checkout_request_id + "9" * 80, amount=500)
    with pytest.raises(InvalidInput):
        await world.callback(body)
    [row] = await world.rows(mpesa_callbacks)
    assert row["outcome"] == "malformed" and row["body"] == body.decode()
    assert (await world.payment(payment.id))["status"] == "pending"


@pytest.mark.parametrize("checkout", ["ws_CO_\ud800", "ws_CO_\u0000abc", "ws_CO_\n1"])
async def test_unprintable_checkout_id_is_kept_and_marked_malformed(world, checkout):
    doc = json.loads(samples.with_ids(samples.CANCELLED, checkout="x"))
    doc["Body"]["stkCallback"]["CheckoutRequestID"] = checkout
    with pytest.raises(InvalidInput):
        await world.callback(json.dumps(doc).encode())
    [row] = await world.rows(mpesa_callbacks)
    assert row["outcome"] == "malformed" and "ws_CO_" in row["body"]


async def test_long_receipt_sends_the_payment_to_review(world):
    payment = await world.pay()
    receipt = await world.callback(success(payment.checkout_request_id, receipt="R" * 200))
    assert receipt.outcome == "review"
    stored = await world.payment(payment.id)
    assert stored["status"] == "needs_review" and "MpesaReceiptNumber" in stored["review_reason"]
    assert stored["mpesa_receipt"] is None and await world.rows(topups) == []


@pytest.mark.parametrize("receipt", ["NLJ\ud800RT61", "NLJ\u0000RT61", 12.5, {"a": 1}])
async def test_unreadable_receipt_sends_the_payment_to_review(world, receipt):
    payment = await world.pay()
    assert (await world.callback(success(payment.checkout_request_id, receipt=receipt))).outcome == "review"
    assert (await world.payment(payment.id))["status"] == "needs_review"


async def test_long_result_desc_is_truncated_for_display(world):
    payment = await world.pay()
    body = json.loads(samples.with_ids(samples.CANCELLED, checkout=payment.checkout_request_id))
    body["Body"]["stkCallback"]["ResultDesc"] = "Request cancelled by user " + "x" * 5000 + "\ud800\u0000"
    assert (await world.callback(json.dumps(body).encode())).outcome == "settled"
    stored = await world.payment(payment.id)
    assert stored["status"] == "cancelled" and stored["result_desc"].startswith("Request cancelled by user")
    assert len(stored["result_desc"]) <= 255


@pytest.mark.parametrize("desc", ["ok \ud800", "ok \u0000", "ok " + "y" * 3000])
async def test_odd_result_desc_on_success_still_completes(world, desc):
    payment = await world.pay()
    assert (await world.callback(success(payment.checkout_request_id, desc=desc))).outcome == "completed"
    stored = await world.payment(payment.id)
    assert stored["status"] == "completed" and "\u0000" not in stored["result_desc"]


@pytest.mark.parametrize("literal", ["123456789012345678901234567890", "1e400", "500.001", "-500"])
async def test_impossible_amount_goes_to_review(world, literal):
    payment = await world.pay()
    assert (await world.callback(raw_amount(payment.checkout_request_id, literal))).outcome in ("review", "mismatch")
    stored = await world.payment(payment.id)
    assert stored["status"] == "needs_review" and await world.rows(topups) == []


async def test_raw_nul_byte_in_the_body_is_kept(world):
    payment = await world.pay()
    body = samples.with_ids(samples.CANCELLED, checkout=payment.checkout_request_id) + b"\x00"
    with pytest.raises(InvalidInput):
        await world.callback(body)  # not JSON
    [row] = await world.rows(mpesa_callbacks)
    assert row["outcome"] == "malformed" and payment.checkout_request_id in row["body"]


async def test_invalid_utf8_is_kept(world):
    payment = await world.pay()
    body = success(payment.checkout_request_id, desc="ok").replace(b'"ok"', b'"ok \xff\xfe"')
    assert (await world.callback(body)).outcome == "completed"
    [row] = await world.rows(mpesa_callbacks)
    assert "\ufffd" in row["body"]


async def test_one_receipt_on_two_payments_sends_the_second_to_review(world):
    first, second = await world.pay(), await world.pay(phone="0722000000")
    assert (await world.callback(success(first.checkout_request_id, receipt="QAB1CD2EF3"))).outcome == "completed"
    receipt = await world.callback(success(second.checkout_request_id, receipt="QAB1CD2EF3"))
    assert receipt.outcome == "review"
    stored = await world.payment(second.id)
    assert stored["status"] == "needs_review" and "QAB1CD2EF3" in stored["review_reason"]
    assert first.id in stored["review_reason"] and stored["mpesa_receipt"] is None
    assert len(await world.rows(topups)) == 1
    outcomes = [row["outcome"] for row in await world.rows(mpesa_callbacks)]
    assert outcomes == ["completed", "review"]


async def test_receipt_reused_by_a_late_success_goes_to_review_too(world):
    first, second = await world.pay(), await world.pay(phone="0722000000")
    await world.callback(success(first.checkout_request_id, receipt="QAB1CD2EF3"))
    await world.callback(samples.with_ids(samples.CANCELLED, checkout=second.checkout_request_id))
    assert (await world.callback(success(second.checkout_request_id, receipt="QAB1CD2EF3"))).outcome == "late_success"
    stored = await world.payment(second.id)
    assert stored["status"] == "needs_review" and stored["mpesa_receipt"] is None
    assert "QAB1CD2EF3" in stored["review_reason"]


async def test_every_body_is_kept_even_when_applying_it_fails(world, monkeypatch):
    """An unexpected failure while applying is recorded on the stored callback, never a lost body."""
    payment = await world.pay()

    async def broken(*_args, **_kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr("core.payments.service._apply_callback", broken)
    receipt = await world.callback(success(payment.checkout_request_id))
    assert receipt.outcome == "error"
    [row] = await world.rows(mpesa_callbacks)
    assert row["outcome"] == "error" and payment.checkout_request_id in row["body"]
    assert (await world.payment(payment.id))["status"] == PaymentStatus.PENDING.value


async def test_a_callback_that_could_not_be_applied_is_on_the_review_list(world, monkeypatch):
    from core.admin.operator import Actor, list_reviews, resolve_review

    payment = await world.pay()

    async def broken(*_args, **_kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr("core.payments.service._apply_callback", broken)
    receipt = await world.callback(success(payment.checkout_request_id))
    [item] = await list_reviews(uow=world.uow())
    assert (item.kind, item.id) == ("callback", str(receipt.callback_id))
    assert payment.checkout_request_id in item.reason
    await resolve_review(item.id, "applied by hand", action="dismiss", actor=Actor("admin"), uow=world.uow(),
                         clock=world.clock)
    assert await list_reviews(uow=world.uow()) == []
