"""Issue 10, money hole 2: only STK query answers known to be final may fail a payment.

Codes collected from Safaricom's Daraja pages and well-known clients: 0 paid; 1, 17, 26, 1001, 1019,
1025, 1032, 1037, 2001, 9999 final without money. Anything else ("still under processing", a code
nobody documented) keeps the payment pending and is asked again, then goes to a person.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from core.meters.model import Meter
from core.payments.model import FINAL_QUERY_FAILURE_CODES, PaymentStatus
from core.payments.reconcile import reconcile_payments, verify_payment
from core.payments.service import InitiatePayment, PaymentLimits, initiate_payment
from core.ports import StkQueryResult
from core.shared.errors import UpstreamError
from gateways.daraja import DarajaGateway
from gateways.daraja_errors import BUSY_MESSAGE
from tests import samples
from tests.fakes import FakeClock, FakeDaraja, FakeUnitOfWork
from tests.test_daraja_gateway import make, request  # noqa: F401  (fixture)
from tests.test_daraja_sandbox import daraja, daraja_server, receiver  # noqa: F401  (fixtures)

LIMITS = PaymentLimits(min_amount=10, max_amount=70_000)


@pytest.fixture
def world():
    uow = FakeUnitOfWork()
    uow.store.meters["m1"] = Meter(id="m1", number="A101", name="Flat A1", device_id="dev1")
    return uow, FakeDaraja(), FakeClock()


async def pending_payment(world):
    uow, daraja, clock = world
    started = await initiate_payment(InitiatePayment(amount=500, phone="0712345678", meter_ref="A101"),
                                     uow=uow, gateway=daraja, limits=LIMITS, clock=clock)
    return started.payment


async def sweep(world, *, after: float = 120):
    uow, daraja, clock = world
    clock.advance(after)
    return await reconcile_payments(uow=uow, gateway=daraja, clock=clock, after_s=60, give_up_s=3600)


@pytest.mark.parametrize("code", ["1", "17", "26", "1001", "1019", "1025", "1037", "2001", "9999"])
async def test_known_final_codes_fail_the_payment(world, code):
    uow, daraja, _ = world
    payment = await pending_payment(world)
    daraja.query_results[payment.checkout_request_id] = StkQueryResult(False, code, "final")
    report = await sweep(world)
    assert report.failed == [payment.id] and code in FINAL_QUERY_FAILURE_CODES
    assert uow.store.payments[payment.id].status is PaymentStatus.FAILED


async def test_cancelled_code_cancels(world):
    uow, daraja, _ = world
    payment = await pending_payment(world)
    daraja.query_results[payment.checkout_request_id] = StkQueryResult(False, "1032", "Request cancelled by user")
    await sweep(world)
    assert uow.store.payments[payment.id].status is PaymentStatus.CANCELLED


@pytest.mark.parametrize("code,desc", [
    ("4999", "The transaction is still under processing"),
    ("1036", "SMSC ACK timeout."),
    ("SFC_IC0003", "The Operator does not exist."),
    ("", ""),
])
async def test_unknown_or_processing_codes_keep_it_pending_then_go_to_a_person(world, code, desc):
    uow, daraja, _ = world
    payment = await pending_payment(world)
    daraja.query_results[payment.checkout_request_id] = StkQueryResult(False, code, desc)
    report = await sweep(world)
    assert report.failed == [] and report.still_processing == 1
    assert uow.store.payments[payment.id].status is PaymentStatus.PENDING
    report = await sweep(world, after=4000)  # past the give-up cutoff: a person looks, with the code
    assert report.to_review == [payment.id]
    stored = uow.store.payments[payment.id]
    assert stored.status is PaymentStatus.NEEDS_REVIEW and f"STK query answered {code or '(no code)'}" in stored.review_reason


async def test_verification_with_an_unknown_code_asks_again(world):
    uow, daraja, clock = world
    payment = await pending_payment(world)
    cid = payment.checkout_request_id
    from core.payments.service import receive_callback

    body = samples.with_ids(samples.SUCCESS, checkout=cid, amount=500)
    await receive_callback(body, source=None, uow=uow, clock=clock, verify=True)
    daraja.query_results[cid] = StkQueryResult(False, "4999", "The transaction is still under processing")
    with pytest.raises(UpstreamError) as caught:
        await verify_payment(payment.id, uow=uow, gateway=daraja, clock=clock)
    assert caught.value.transient
    assert uow.store.payments[payment.id].status is PaymentStatus.PENDING


# -- the gateway: 500.001.1001 that is not "being processed" ----------------------------------


async def test_merchant_does_not_exist_is_a_configuration_error_not_busy(
    make, daraja: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    gateway: DarajaGateway = make()
    daraja.sandbox.fail_next_queries(5, 500, "500.001.1001", "Merchant does not exist")
    with caplog.at_level(logging.ERROR, logger="lipameter.daraja"), pytest.raises(UpstreamError) as caught:
        await gateway.stk_query("ws_CO_anything")
    assert caught.value.message != BUSY_MESSAGE and "not set up correctly" in caught.value.message
    assert not caught.value.transient and daraja.sandbox.query_requests == 1  # no retry can fix it
    assert "configuration error" in caplog.text and "Merchant does not exist" in caplog.text
    problem = gateway.configuration_problem
    assert problem is not None and problem.code == "500.001.1001" and "Merchant does not exist" in problem.message


async def test_push_to_a_missing_merchant_reads_as_setup_not_busy(make, daraja: SimpleNamespace) -> None:
    gateway: DarajaGateway = make()
    daraja.sandbox.fail_next_pushes(5, 500, "500.001.1001", "Merchant does not exist")
    with pytest.raises(UpstreamError) as caught:
        await gateway.stk_push(request())
    assert caught.value.message == "M-Pesa could not send the payment prompt: the payment service is not set up correctly."
    assert daraja.sandbox.push_requests == 1 and gateway.configuration_problem is not None


async def test_being_processed_is_not_a_configuration_error(make, daraja: SimpleNamespace) -> None:
    gateway: DarajaGateway = make()
    daraja.sandbox.fail_next_queries(1, 500, "500.001.1001", "The transaction is being processed")
    assert (await gateway.stk_query("ws_CO_anything")).processing
    assert gateway.configuration_problem is None
