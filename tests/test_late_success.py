"""Issue 10, money hole 1: M-Pesa says "paid" for a payment we had already settled another way.

The tenant's money moved; the payment goes to a person (`needs_review`), who credits it once or
dismisses it. Exact copies of the callback that completed a payment stay `duplicate`.
"""

import pytest

from core.admin.operator import Actor, list_reviews, resolve_review
from core.meters.model import Meter
from core.payments import model as pm
from core.payments.model import PaymentStatus
from core.payments.reconcile import reconcile_payments
from core.payments.service import InitiatePayment, PaymentLimits, initiate_payment, receive_callback
from core.ports import StkQueryResult
from core.shared.errors import Conflict
from tests import samples
from tests.fakes import FakeClock, FakeDaraja, FakeUnitOfWork

LIMITS = PaymentLimits(min_amount=10, max_amount=70_000)
ADMIN = Actor("admin")


@pytest.fixture
def world():
    uow = FakeUnitOfWork()
    uow.store.meters["m1"] = Meter(id="m1", number="A101", name="Flat A1", device_id="dev1")
    return uow, FakeDaraja(), FakeClock()


async def pay(world, phone="0712345678"):
    uow, daraja, clock = world
    started = await initiate_payment(InitiatePayment(amount=500, phone=phone, meter_ref="A101"),
                                     uow=uow, gateway=daraja, limits=LIMITS, clock=clock)
    return started.payment


async def callback(world, body: bytes):
    uow, _, clock = world
    return await receive_callback(body, source="127.0.0.1", uow=uow, clock=clock, verify=False)


def success(checkout: str, receipt: str = "NLJ7RT61SV", amount=500) -> bytes:
    body = samples.with_ids(samples.SUCCESS, checkout=checkout, amount=amount)
    return body.replace(b"NLJ7RT61SV", receipt.encode())


async def test_success_after_cancel_goes_to_review_and_is_credited_once(world):
    uow, _, _ = world
    payment = await pay(world)
    cid = payment.checkout_request_id
    assert (await callback(world, samples.with_ids(samples.CANCELLED, checkout=cid))).outcome == "settled"
    assert (await callback(world, success(cid))).outcome == "late_success"
    stored = uow.store.payments[payment.id]
    assert stored.status is PaymentStatus.NEEDS_REVIEW
    assert stored.review_reason == "M-Pesa says paid after we settled it as cancelled"
    assert stored.mpesa_receipt == "NLJ7RT61SV" and uow.store.topups == {}
    reviews = await list_reviews(uow=uow)
    assert [(r.kind, r.id) for r in reviews] == [("payment", payment.id)]
    assert "after we settled it as cancelled" in reviews[0].reason
    # The same late callback again changes nothing.
    assert (await callback(world, success(cid))).outcome == "duplicate"
    await resolve_review(payment.id, "tenant showed the SMS", action="credit", actor=ADMIN, uow=uow, clock=FakeClock())
    assert len(uow.store.topups) == 1
    with pytest.raises(Conflict):
        await resolve_review(payment.id, "again", action="credit", actor=ADMIN, uow=uow, clock=FakeClock())
    assert len(uow.store.topups) == 1


async def test_success_after_stk_query_failure_goes_to_review(world):
    uow, daraja, clock = world
    payment = await pay(world)
    daraja.query_results[payment.checkout_request_id] = StkQueryResult(False, "1037", "DS timeout user cannot be reached")
    clock.advance(120)
    report = await reconcile_payments(uow=uow, gateway=daraja, clock=clock, after_s=60, give_up_s=3600)
    assert report.failed == [payment.id]
    assert (await callback(world, success(payment.checkout_request_id))).outcome == "late_success"
    stored = uow.store.payments[payment.id]
    assert stored.status is PaymentStatus.NEEDS_REVIEW and "settled it as failed" in stored.review_reason
    await resolve_review(payment.id, "not paid after all", action="dismiss", actor=ADMIN, uow=uow, clock=clock)
    assert uow.store.topups == {} and await list_reviews(uow=uow) == []


async def test_success_after_give_up_review_keeps_the_receipt_for_the_person(world):
    uow, daraja, clock = world
    payment = await pay(world)
    clock.advance(4000)
    report = await reconcile_payments(uow=uow, gateway=daraja, clock=clock, after_s=60, give_up_s=3600)
    assert report.to_review == [payment.id]
    assert (await callback(world, success(payment.checkout_request_id, receipt="QAB1CD2EF3"))).outcome == "late_success"
    stored = uow.store.payments[payment.id]
    assert stored.status is PaymentStatus.NEEDS_REVIEW and stored.mpesa_receipt == "QAB1CD2EF3"
    assert "settled it as needs_review" in stored.review_reason


async def test_success_after_a_dismissed_review_reopens_it(world):
    uow, _, clock = world
    payment = await pay(world)
    cid = payment.checkout_request_id
    await callback(world, success(cid, amount=1))  # a mismatch: review
    await resolve_review(payment.id, "refunded by hand", action="dismiss", actor=ADMIN, uow=uow, clock=clock)
    assert await list_reviews(uow=uow) == []
    assert (await callback(world, success(cid, receipt="QZZ9YY8XX7"))).outcome == "late_success"
    stored = uow.store.payments[payment.id]
    assert stored.status is PaymentStatus.NEEDS_REVIEW and stored.resolved_at is None
    assert [r.id for r in await list_reviews(uow=uow)] == [payment.id]


async def test_exact_duplicate_of_the_completing_callback_stays_duplicate(world):
    uow, _, _ = world
    payment = await pay(world)
    cid = payment.checkout_request_id
    assert (await callback(world, success(cid))).outcome == "completed"
    assert (await callback(world, success(cid))).outcome == "duplicate"
    assert uow.store.payments[payment.id].status is PaymentStatus.COMPLETED and len(uow.store.topups) == 1


async def test_late_failure_after_failure_changes_nothing(world):
    uow, _, _ = world
    payment = await pay(world)
    cid = payment.checkout_request_id
    await callback(world, samples.with_ids(samples.CANCELLED, checkout=cid))
    assert (await callback(world, samples.with_ids(samples.CANCELLED, checkout=cid))).outcome == "duplicate"
    assert uow.store.payments[payment.id].status is PaymentStatus.CANCELLED


@pytest.mark.parametrize("status", [PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.PUSH_FAILED,
                                    PaymentStatus.NEEDS_REVIEW])
def test_late_success_transition_is_guarded(status):
    now = FakeClock().now()
    payment = pm.Payment(id="p", amount=1, phone="254712345678", meter_id="m", channel=pm.Channel.API,
                         created_at=now, updated_at=now, status=status)
    pm.reopen_for_late_success(payment, now=now)
    assert payment.status is PaymentStatus.NEEDS_REVIEW
    assert payment.review_reason == f"M-Pesa says paid after we settled it as {status.value}"


@pytest.mark.parametrize("status", [PaymentStatus.REQUESTED, PaymentStatus.PENDING, PaymentStatus.COMPLETED])
def test_late_success_transition_refused_elsewhere(status):
    now = FakeClock().now()
    payment = pm.Payment(id="p", amount=1, phone="254712345678", meter_id="m", channel=pm.Channel.API,
                         created_at=now, updated_at=now, status=status)
    with pytest.raises(pm.IllegalTransition):
        pm.reopen_for_late_success(payment, now=now)
