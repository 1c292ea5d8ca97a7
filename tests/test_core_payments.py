"""Unit tests of the payment use cases on fakes (no database, no network)."""


import pytest

from core.meters.model import Meter
from core.payments import model as pm
from core.payments.model import PaymentStatus
from core.payments.reconcile import reconcile_payments, verify_payment
from core.payments.service import InitiatePayment, PaymentLimits, initiate_payment, receive_callback, request_payment
from core.ports import StkQueryResult
from core.shared.errors import Conflict, InvalidInput, NotFound, UpstreamError
from core.shared.money import parse_whole_kes
from core.shared.phone import can_get_stk_prompt, normalize_kenyan_mobile
from tests import samples
from tests.fakes import FakeClock, FakeDaraja, FakeUnitOfWork

LIMITS = PaymentLimits(min_amount=10, max_amount=70_000)


@pytest.mark.parametrize("value,expected", [(500, 500), ("500", 500), (500.0, 500), ("500.00", 500), (10, 10), (70_000, 70_000)])
def test_whole_kes_accepted(value, expected):
    assert parse_whole_kes(value, minimum=10, maximum=70_000) == expected


@pytest.mark.parametrize("value", [0, -5, 10.5, "abc", "", None, True, 9, 70_001, "1e3", float("nan"), [], {}])
def test_bad_amounts_refused(value):
    with pytest.raises(InvalidInput):
        parse_whole_kes(value, minimum=10, maximum=70_000)


@pytest.mark.parametrize("raw", ["0712345678", "+254712345678", "254712345678", "0112345678", " 0712-345-678 "])
def test_kenyan_mobiles_normalised(raw):
    assert normalize_kenyan_mobile(raw) in ("254712345678", "254112345678")


@pytest.mark.parametrize("raw", ["0712", "+1 555 123 4567", "letters", "0201234567", "", None, 712345678000000])
def test_bad_phones_refused(raw):
    with pytest.raises(InvalidInput):
        normalize_kenyan_mobile(raw)


@pytest.mark.parametrize(("phone", "network_code", "reachable"), [
    ("254712345678", "", True),  # Safaricom's range
    ("254733000222", "", False),  # Airtel's range
    ("254733000222", "63902", True),  # Airtel's range, ported: the USSD gateway sees it on Safaricom
    ("254712345678", "63903", False),  # Safaricom's range, ported out: the gateway sees it on Airtel
    ("254712345678", "64110", True),  # not a Kenyan network code: the range decides
])
def test_who_can_get_an_stk_prompt(phone, network_code, reachable):
    assert can_get_stk_prompt(phone, network_code) is reachable


def test_terminal_states_never_move():
    for status in PaymentStatus:
        if status.terminal:
            payment = pm.Payment(id="p", amount=1, phone="254712345678", meter_id="m", channel=pm.Channel.API,
                                 created_at=FakeClock().now(), updated_at=FakeClock().now(), status=status)
            with pytest.raises(pm.IllegalTransition):
                pm.settle(payment, result_code="1", result_desc="x", now=FakeClock().now())


@pytest.fixture
def world():
    uow = FakeUnitOfWork()
    uow.store.meters["m1"] = Meter(id="m1", number="A101", name="Flat A1", device_id="dev1")
    uow.store.meters["m2"] = Meter(id="m2", number="B7", name="Shop", device_id="dev2", active=False)
    return uow, FakeDaraja(), FakeClock()


def pay(world, **overrides):
    uow, daraja, clock = world
    cmd = dict(amount=500, phone="0712345678", meter_ref="A101")
    cmd.update(overrides)
    return initiate_payment(InitiatePayment(**cmd), uow=uow, gateway=daraja, limits=LIMITS, clock=clock)


async def test_initiate_pushes_with_meter_number_as_account_reference(world):
    _uow, daraja, _ = world
    started = await pay(world, description="Electricity for flat A1")
    assert started.payment.status is PaymentStatus.PENDING
    assert started.payment.checkout_request_id == "ws_CO_TEST0001"
    push = daraja.pushes[0]
    assert (push.phone, push.amount, push.account_reference) == ("254712345678", 500, "A101")
    assert len(push.description) <= 13


@pytest.mark.parametrize("overrides,error", [
    ({"meter_ref": "nope"}, NotFound), ({"meter_ref": "B7"}, InvalidInput), ({"amount": 10.5}, InvalidInput),
    ({"phone": "0712"}, InvalidInput), ({"amount": 0}, InvalidInput),
])
async def test_bad_requests_write_nothing(world, overrides, error):
    uow, daraja, _ = world
    with pytest.raises(error):
        await pay(world, **overrides)
    assert uow.store.payments == {} and daraja.pushes == []


async def test_second_push_while_pending_is_refused_unless_same_key(world):
    uow, daraja, _ = world
    first = await pay(world, idempotency_key="k1")
    again = await pay(world, idempotency_key="k1")
    assert again.replayed and again.payment.id == first.payment.id
    with pytest.raises(Conflict):
        await pay(world)
    with pytest.raises(Conflict):
        await pay(world, idempotency_key="k1", amount=600)
    assert len(daraja.pushes) == 1 and len(uow.store.payments) == 1


async def test_push_refused_records_push_failed(world):
    _uow, daraja, _ = world
    daraja.push_error = UpstreamError("invalid phone number", code="400.002.02")
    started = await pay(world)
    assert started.payment.status is PaymentStatus.PUSH_FAILED
    assert started.payment.result_desc == "invalid phone number"
    await pay(world)  # the phone is free again


async def callback(world, body: bytes, verify=False):
    uow, _, clock = world
    return await receive_callback(body, source="127.0.0.1", uow=uow, clock=clock, verify=verify)


async def test_success_callback_completes_and_queues_one_topup(world):
    uow, _, _ = world
    payment = (await pay(world)).payment
    body = samples.with_ids(samples.SUCCESS, checkout=payment.checkout_request_id, amount=500.00)
    outcomes = [(await callback(world, body)).outcome for _ in range(3)]
    assert outcomes == ["completed", "duplicate", "duplicate"]
    stored = uow.store.payments[payment.id]
    assert stored.status is PaymentStatus.COMPLETED and stored.mpesa_receipt == "NLJ7RT61SV"
    assert len(uow.store.topups) == 1 and len(uow.jobs.of_kind("topup")) == 1
    assert len(uow.store.callbacks) == 3  # every delivery kept


async def test_cancel_then_late_success_goes_to_a_person_not_the_meter(world):
    """The seed filed this as a duplicate; M-Pesa took the money, so a person decides (issue 10)."""
    uow, _, _ = world
    payment = (await pay(world)).payment
    cid = payment.checkout_request_id
    assert (await callback(world, samples.with_ids(samples.CANCELLED, checkout=cid))).outcome == "settled"
    late = samples.with_ids(samples.SUCCESS, checkout=cid, amount=500)
    assert (await callback(world, late)).outcome == "late_success"
    assert uow.store.payments[payment.id].status is PaymentStatus.NEEDS_REVIEW
    assert uow.store.topups == {}


async def test_amount_mismatch_goes_to_review_never_credited(world):
    uow, _, _ = world
    payment = (await pay(world)).payment
    body = samples.with_ids(samples.SUCCESS, checkout=payment.checkout_request_id, amount=1)
    assert (await callback(world, body)).outcome == "mismatch"
    stored = uow.store.payments[payment.id]
    assert stored.status is PaymentStatus.NEEDS_REVIEW and "KES 500" in stored.review_reason
    assert uow.store.topups == {}


async def test_unknown_checkout_kept_as_orphan(world):
    uow, _, _ = world
    receipt = await callback(world, samples.with_ids(samples.SUCCESS, checkout="ws_CO_unknown"))
    assert receipt.outcome == "orphan" and receipt.payment_id is None
    assert uow.store.callbacks[0]["outcome"] == "orphan" and uow.store.topups == {}


async def test_malformed_callback_is_stored_then_refused(world):
    uow, _, _ = world
    with pytest.raises(InvalidInput):
        await callback(world, b'{"hello": 1}')
    assert uow.store.callbacks[0]["outcome"] == "malformed"


async def test_callback_before_push_answer_is_applied_when_recorded(world):
    """Daraja may call back before we wrote its CheckoutRequestID: the orphan is applied later."""
    uow, daraja, clock = world
    started = await request_payment(InitiatePayment(amount=500, phone="0712345678", meter_ref="A101"),
                                    uow=uow, limits=LIMITS, clock=clock)
    await callback(world, samples.with_ids(samples.SUCCESS, checkout="ws_CO_TEST0001", amount=500))
    from core.payments.service import push_payment
    payment = await push_payment(started.payment.id, uow=uow, gateway=daraja, clock=clock)
    assert uow.store.payments[payment.id].status is PaymentStatus.COMPLETED
    assert uow.store.callbacks[0]["outcome"] == "completed"


async def test_verify_callbacks_waits_for_query(world):
    uow, daraja, clock = world
    payment = (await pay(world)).payment
    cid = payment.checkout_request_id
    body = samples.with_ids(samples.SUCCESS, checkout=cid, amount=500)
    assert (await callback(world, body, verify=True)).outcome == "awaiting_verification"
    assert uow.store.payments[payment.id].status is PaymentStatus.PENDING and uow.store.topups == {}
    daraja.query_results[cid] = StkQueryResult(processing=False, result_code="0", result_desc="ok")
    assert await verify_payment(payment.id, uow=uow, gateway=daraja, clock=clock) == "completed"
    assert uow.store.payments[payment.id].mpesa_receipt == "NLJ7RT61SV"
    assert len(uow.store.topups) == 1


async def test_verify_refuted_goes_to_review(world):
    uow, daraja, clock = world
    payment = (await pay(world)).payment
    cid = payment.checkout_request_id
    await callback(world, samples.with_ids(samples.SUCCESS, checkout=cid, amount=500), verify=True)
    daraja.query_results[cid] = StkQueryResult(processing=False, result_code="1032", result_desc="cancelled")
    assert await verify_payment(payment.id, uow=uow, gateway=daraja, clock=clock) == "review"
    assert uow.store.payments[payment.id].status is PaymentStatus.NEEDS_REVIEW and uow.store.topups == {}


async def test_reconcile_settles_lost_callbacks_and_gives_up_after_cutoff(world):
    uow, daraja, clock = world
    paid = (await pay(world)).payment
    stuck = (await pay(world, phone="0722000000")).payment
    daraja.query_results[paid.checkout_request_id] = StkQueryResult(False, "0", "processed")
    clock.advance(60)
    report = await reconcile_payments(uow=uow, gateway=daraja, clock=clock, after_s=120, give_up_s=600)
    assert report.queried == 0  # too young
    clock.advance(100)
    report = await reconcile_payments(uow=uow, gateway=daraja, clock=clock, after_s=120, give_up_s=600)
    assert report.completed == [paid.id] and report.still_processing == 1
    clock.advance(600)
    report = await reconcile_payments(uow=uow, gateway=daraja, clock=clock, after_s=120, give_up_s=600)
    assert report.to_review == [stuck.id]
    assert uow.store.payments[stuck.id].status is PaymentStatus.NEEDS_REVIEW
    assert len(uow.store.topups) == 1


async def test_unmatched_paid_callback_waits_for_a_person_until_dismissed(world):
    from core.admin.operator import Actor, list_reviews, resolve_review

    uow, _, clock = world
    await callback(world, samples.with_ids(samples.SUCCESS, checkout="ws_CO_nobody", amount=300))
    await callback(world, samples.with_ids(samples.CANCELLED, checkout="ws_CO_nobody_either"))
    [item] = await list_reviews(uow=uow)  # the cancelled one moved no money
    assert item.kind == "callback" and item.amount == 300 and "NLJ7RT61SV" in item.reason
    with pytest.raises(InvalidInput):
        await resolve_review(item.id, "x", action="credit", actor=Actor("amina"), uow=uow, clock=clock)
    await resolve_review(item.id, "credited A101 by hand", action="dismiss", actor=Actor("amina"), uow=uow, clock=clock)
    assert await list_reviews(uow=uow) == []
    assert uow.store.audit[-1]["action"] == "resolve_callback"
    with pytest.raises(NotFound):
        await resolve_review(item.id, "again", action="dismiss", actor=Actor("amina"), uow=uow, clock=clock)
