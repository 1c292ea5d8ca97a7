"""Review findings on the money path (each test fails today and should pass after the fix).

Fakes only (tests/fakes.py): no database, no network.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.admin.operator import Actor, list_reviews, resolve_review, retry_topup
from core.jobs.worker import RetryLater
from core.meters.model import Meter
from core.meters.profiles import BUILTIN_PROFILES
from core.payments.model import PaymentStatus
from core.payments.reconcile import reconcile_payments
from core.payments.service import (
    InitiatePayment,
    PaymentLimits,
    initiate_payment,
    push_payment,
    receive_callback,
    request_payment,
)
from core.shared.errors import Conflict, UpstreamError
from core.topups.model import TopUp, TopUpStatus
from core.topups.service import TopUpEngine, TopUpPolicy
from tests import samples
from tests.fakes import FakeClock, FakeDaraja, FakeMeterGateway, FakeUnitOfWork

LIMITS = PaymentLimits(min_amount=10, max_amount=70_000)
ADMIN = Actor("admin")


async def no_sleep(_seconds):
    return None


# --- 1. an STK push whose answer was lost is recorded as push_failed ---------------------------------

@pytest.fixture
def pay_world():
    uow = FakeUnitOfWork()
    uow.store.meters["m1"] = Meter(id="m1", number="A101", name="Flat A1", device_id="dev1")
    return uow, FakeDaraja(), FakeClock()


async def test_push_with_unknown_outcome_is_not_a_refusal(pay_world):
    """gateways/daraja.py raises code=outcome_unknown (transient) when the push left but its answer was
    lost: the prompt may be on the phone. push_payment records it as push_failed (terminal, "Not sent"),
    so the tenant's payment comes back as an orphan callback that no review list shows: money lost."""
    uow, daraja, clock = pay_world
    daraja.push_error = UpstreamError("M-Pesa did not confirm the prompt", code="outcome_unknown", transient=True)
    started = await initiate_payment(InitiatePayment(amount=500, phone="0712345678", meter_ref="A101"),
                                     uow=uow, gateway=daraja, limits=LIMITS, clock=clock)
    # Daraja did send the prompt (id ws_CO_LOST) and the tenant paid.
    await receive_callback(samples.with_ids(samples.SUCCESS, checkout="ws_CO_LOST", amount=500),
                           source="127.0.0.1", uow=uow, clock=clock, verify=False)
    assert uow.store.payments[started.payment.id].status is not PaymentStatus.PUSH_FAILED
    clock.advance(3 * 3600)
    await reconcile_payments(uow=uow, gateway=daraja, clock=clock, after_s=120, give_up_s=3600)
    reviews = await list_reviews(uow=uow)
    assert started.payment.id in [item.id for item in reviews], "a person must be told about this payment"


# --- 2. VERIFY_CALLBACKS is bypassed for a callback that arrived before the push answer was recorded ---

async def test_orphan_success_applied_at_push_time_skips_verification(pay_world):
    """_record_push_accepted applies orphans with verify=False: with VERIFY_CALLBACKS on, an unproven
    success callback is credited without the STK query (DESIGN §3: never auto-credit what we cannot prove).
    push_payment has no way to know about VERIFY_CALLBACKS today, so the fix adds `verify=` to it."""
    uow, daraja, clock = pay_world
    started = await request_payment(InitiatePayment(amount=500, phone="0712345678", meter_ref="A101"),
                                    uow=uow, limits=LIMITS, clock=clock)
    await receive_callback(samples.with_ids(samples.SUCCESS, checkout="ws_CO_TEST0001", amount=500),
                           source="127.0.0.1", uow=uow, clock=clock, verify=True)
    try:
        await push_payment(started.payment.id, uow=uow, gateway=daraja, clock=clock, verify=True)
    except TypeError:
        await push_payment(started.payment.id, uow=uow, gateway=daraja, clock=clock)
    assert uow.store.topups == {}, "credited on an unverified callback"
    assert uow.store.payments[started.payment.id].status is PaymentStatus.PENDING


# --- top-up world ---------------------------------------------------------------------------------

class PermanentStatusAfterSend(FakeMeterGateway):
    """The command lands; the next status read is refused permanently (e.g. HTTP 403 / Tuya 1106)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_status_after_send = 0

    async def send_commands(self, device_id, commands):
        await super().send_commands(device_id, commands)

    async def status(self, device_id):
        if self.sent and self.fail_status_after_send:
            self.fail_status_after_send -= 1
            raise UpstreamError("the Tuya cloud answered HTTP 403", code="tuya_unavailable", transient=False)
        return await super().status(device_id)


@pytest.fixture
def topup_world():
    uow = FakeUnitOfWork()
    tuya = PermanentStatusAfterSend()
    clock = FakeClock()
    tuya.add("dev-A101", "seed", balance="100")
    uow.store.meters["A101"] = Meter(id="A101", number="A101", name="A101", device_id="dev-A101", profile="seed",
                                     price_per_kwh=Decimal("25"), dp_specs=tuya.dp_specs("dev-A101"))
    engine = TopUpEngine(uow=lambda: FakeUnitOfWork(uow.store), meters=tuya, profiles=BUILTIN_PROFILES, clock=clock,
                         policy=TopUpPolicy(max_attempts=2, confirm_deadline_s=0, poll_interval_s=0), sleep=no_sleep)
    now = clock.now()
    uow.store.topups["t1"] = TopUp(id="t1", meter_id="A101", amount=Decimal("500"), created_at=now, updated_at=now,
                                   payment_id="p1", next_attempt_at=now)
    return uow, tuya, clock, engine


async def run_until_done(engine, clock, topup_id="t1", limit=10):
    for _ in range(limit):
        try:
            return await engine.run(topup_id)
        except RetryLater as later:
            clock.advance(later.delay_s + 1)
    raise AssertionError("top-up never finished")


def balance(tuya) -> Decimal:
    from core.meters.profiles import DpSpec
    from core.topups.decision import read_meter

    specs = {c: DpSpec.from_dict(s) for c, s in tuya.dp_specs("dev-A101").items()}
    return read_meter(BUILTIN_PROFILES["seed"], specs, tuya.meters["dev-A101"].status_values()).money_balance


# --- 3. a permanent error after the command left marks the top-up FAILED; retry then credits twice ----

async def test_permanent_error_after_send_is_not_failed(topup_world):
    """run(): any non-transient UpstreamError -> FAILED, even when sent_at is set (the charge may have
    landed). retry_topup trusts FAILED ("nothing reached the meter"), clears sent_at/counter_before and
    sends again: the meter is credited twice for one payment."""
    _uow, tuya, clock, engine = topup_world
    tuya.fail_status_after_send = 1
    first = await run_until_done(engine, clock)
    assert len(tuya.sent) == 1 and balance(tuya) == Decimal(600)  # the charge landed
    assert first is not TopUpStatus.FAILED, "a sent charge of unknown outcome must not be FAILED"


async def test_retry_of_failed_topup_never_credits_twice(topup_world):
    uow, tuya, clock, engine = topup_world
    tuya.fail_status_after_send = 1
    await run_until_done(engine, clock)
    topup = uow.store.topups["t1"]
    if topup.status is TopUpStatus.FAILED:
        await retry_topup("t1", "meter was unreachable", actor=ADMIN, uow=FakeUnitOfWork(uow.store), clock=clock)
        await run_until_done(engine, clock)
    assert balance(tuya) == Decimal(600), f"meter credited {len(tuya.sent)} times for one payment"


# --- 4. a retried review that lands in review again is invisible and cannot be resolved -----------------

async def test_second_review_after_retry_is_visible_and_resolvable(topup_world):
    """resolve_review(action=retry) sets resolved_at and never clears it; in_review() filters on
    resolved_at IS NULL and resolve_review refuses `resolved_at is not None`. A top-up that goes back to
    needs_review after the retry is stuck: not listed, not resolvable, not retryable."""
    uow, tuya, clock, engine = topup_world
    topup = uow.store.topups["t1"]
    topup.status, topup.last_error = TopUpStatus.NEEDS_REVIEW, "meter counter moved by an unexpected amount"
    await resolve_review("t1", "meter shows it did not land", action="retry", actor=ADMIN,
                         uow=FakeUnitOfWork(uow.store), clock=clock)
    tuya.lose_answer = 1  # the retry sends; the answer is lost ...
    with pytest.raises(RetryLater) as later:
        await engine.run("t1")
    meter = tuya.meters["dev-A101"]
    for code, value in meter.validate([{"code": "charge_money", "value": 10000}]):
        meter.apply(code, value)  # ... and someone else credits KES 100 meanwhile: ambiguous again
    clock.advance(later.value.delay_s + 1)
    assert await engine.run("t1") is TopUpStatus.NEEDS_REVIEW
    assert "t1" in [item.id for item in await list_reviews(uow=FakeUnitOfWork(uow.store))]
    try:
        await resolve_review("t1", "checked the meter", action="applied", actor=ADMIN,
                             uow=FakeUnitOfWork(uow.store), clock=clock)
    except Conflict as error:
        pytest.fail(f"the second review cannot be resolved: {error}")
