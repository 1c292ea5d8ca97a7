"""DarajaGateway against the Daraja sandbox over real loopback HTTP (no transport mocks)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from core.ports import StkPushRequest, StkQueryResult
from core.shared.errors import InvalidInput, UpstreamError
from core.shared.phone import mask_phone
from gateways.daraja import DarajaGateway
from gateways.daraja_errors import DUPLICATE_MESSAGE, Answer, ConfigurationError, Refused, Retryable, check_answer
from tests.servers import reserve_port
from tests.test_daraja_sandbox import KEY, PASSKEY, PHONE, SECRET, SHORTCODE, daraja, daraja_server, receiver

__all__ = ["daraja", "daraja_server", "receiver"]  # fixtures shared with the sandbox tests

FAILURES = [
    ("cancelled", "1032", "Request cancelled by user"),
    ("unreachable", "1037", "DS timeout user cannot be reached"),
    ("wrong_pin", "2001", "The initiator information is invalid."),
    ("insufficient_funds", "1", "The balance is insufficient for the transaction."),
]


def request(phone: str = PHONE, amount: Any = 500, **kw: Any) -> StkPushRequest:
    return StkPushRequest(phone=phone, amount=amount, account_reference=kw.get("ref", "MTR-001"), description=kw.get("desc", "Electricity"))


@pytest.fixture
async def make(daraja: SimpleNamespace, receiver: SimpleNamespace) -> AsyncIterator[Callable[..., DarajaGateway]]:
    made: list[DarajaGateway] = []

    def factory(**overrides: Any) -> DarajaGateway:
        options: dict[str, Any] = dict(
            base_url=daraja.url,
            consumer_key=KEY,
            consumer_secret=SECRET,
            shortcode=SHORTCODE,
            passkey=PASSKEY,
            transaction_type="CustomerPayBillOnline",
            callback_url=receiver.callback_url,
            timeout_s=2.0,
            max_retries=3,
            backoff_base_s=0.01,
        )
        options.update(overrides)
        made.append(DarajaGateway(**options))
        return made[-1]

    yield factory
    for gateway in made:
        await gateway.aclose()


@pytest.fixture
def gateway(make: Callable[..., DarajaGateway]) -> DarajaGateway:
    return make()


# -- the happy path and every callback outcome -----------------------------------------------


async def test_push_is_accepted_and_the_callback_arrives(
    gateway: DarajaGateway, daraja: SimpleNamespace, receiver: SimpleNamespace
) -> None:
    accepted = await gateway.stk_push(request(desc="Electricity top-up"))
    assert accepted.checkout_request_id.startswith("ws_CO_")
    assert accepted.customer_message == "Success. Request accepted for processing"
    [txn] = daraja.sandbox.transactions  # the sandbox checked Password and Timestamp to get here
    assert (txn.phone, txn.amount, txn.account_reference) == (PHONE, 500, "MTR-001")
    assert txn.description == "Electricity t"  # Daraja's 13-character TransactionDesc
    assert txn.callback_url == receiver.callback_url
    [body] = await receiver.rec.wait_for(accepted.checkout_request_id)
    callback = body["Body"]["stkCallback"]
    assert callback["MerchantRequestID"] == accepted.merchant_request_id
    assert callback["ResultCode"] == 0
    items = {i["Name"]: i["Value"] for i in callback["CallbackMetadata"]["Item"]}
    assert items["Amount"] == 500.0 and items["PhoneNumber"] == int(PHONE) and items["MpesaReceiptNumber"] == txn.receipt
    result = await gateway.stk_query(accepted.checkout_request_id)
    assert result == StkQueryResult(False, "0", "The service request is processed successfully.")


async def test_buy_goods_sends_the_till_as_party_b(make: Callable[..., DarajaGateway], daraja: SimpleNamespace) -> None:
    await make(transaction_type="CustomerBuyGoodsOnline", party_b="5432101").stk_push(request())
    [txn] = daraja.sandbox.transactions
    assert (txn.transaction_type, txn.party_b) == ("CustomerBuyGoodsOnline", "5432101")
    with pytest.raises(ValueError):
        make(transaction_type="CustomerPayBill")


@pytest.mark.parametrize(("outcome", "code", "desc"), FAILURES)
async def test_failed_outcomes_reach_callback_and_query(
    gateway: DarajaGateway, daraja: SimpleNamespace, receiver: SimpleNamespace, outcome: str, code: str, desc: str
) -> None:
    daraja.sandbox.script_phone(PHONE, outcome)
    accepted = await gateway.stk_push(request())
    [body] = await receiver.rec.wait_for(accepted.checkout_request_id)
    assert body["Body"]["stkCallback"] == {
        "MerchantRequestID": accepted.merchant_request_id,
        "CheckoutRequestID": accepted.checkout_request_id,
        "ResultCode": int(code),
        "ResultDesc": desc,
    }
    assert await gateway.stk_query(accepted.checkout_request_id) == StkQueryResult(False, code, desc)


async def test_query_reports_processing_until_the_prompt_is_answered(
    gateway: DarajaGateway, daraja: SimpleNamespace, receiver: SimpleNamespace
) -> None:
    daraja.sandbox.script_next("lost_callback", delay_s=0.3)
    accepted = await gateway.stk_push(request())
    assert await gateway.stk_query(accepted.checkout_request_id) == StkQueryResult(processing=True)
    await asyncio.sleep(0.4)
    assert (await gateway.stk_query(accepted.checkout_request_id)).result_code == "0"
    assert receiver.rec.for_checkout(accepted.checkout_request_id) == []  # the callback was lost


async def test_query_for_an_unknown_request_is_refused(gateway: DarajaGateway) -> None:
    with pytest.raises(UpstreamError) as caught:
        await gateway.stk_query("ws_CO_000000000000000000")
    assert not caught.value.transient and caught.value.code == "400.002.02"
    assert caught.value.message == "M-Pesa could not check the payment: unknown payment request."


# -- tokens ----------------------------------------------------------------------------------


async def test_token_is_cached_and_fetched_once_under_concurrency(
    gateway: DarajaGateway, daraja: SimpleNamespace
) -> None:
    phones = [f"25471100000{n}" for n in range(5)]
    accepted = await asyncio.gather(*(gateway.stk_push(request(phone=p)) for p in phones))
    await gateway.stk_query(accepted[0].checkout_request_id)
    assert daraja.sandbox.token_requests == 1


async def test_expired_token_is_refreshed_once(gateway: DarajaGateway, daraja: SimpleNamespace) -> None:
    await gateway.stk_push(request())
    daraja.sandbox.expire_tokens()
    await gateway.stk_push(request(phone="254711000009"))
    assert daraja.sandbox.token_requests == 2
    assert daraja.sandbox.push_requests == 3  # refused once with 404.001.03, then repeated
    assert len(daraja.sandbox.transactions) == 2


async def test_wrong_consumer_secret(make: Callable[..., DarajaGateway], caplog: pytest.LogCaptureFixture) -> None:
    gateway = make(consumer_secret="not-the-secret")
    with caplog.at_level(logging.DEBUG, logger="lipameter.daraja"), pytest.raises(UpstreamError) as caught:
        await gateway.stk_push(request())
    error = caught.value
    assert not error.transient and error.code == "400.008.01"
    assert error.message == "M-Pesa could not send the payment prompt: the payment service is not set up correctly."
    assert "not-the-secret" not in caplog.text + str(error) + repr(gateway)


# -- retries and refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [(429, "500.003.02", "Spike arrest violation"), (500, "500.003.1001", "Internal Server Error"), (503, "503.001", "")],
)
async def test_transient_push_errors_are_retried(
    gateway: DarajaGateway, daraja: SimpleNamespace, status: int, code: str, message: str
) -> None:
    daraja.sandbox.fail_next_pushes(2, status, code, message)
    accepted = await gateway.stk_push(request())
    assert daraja.sandbox.push_requests == 3
    assert [t.checkout_request_id for t in daraja.sandbox.transactions] == [accepted.checkout_request_id]


async def test_persistent_500_gives_up_as_transient(make: Callable[..., DarajaGateway], daraja: SimpleNamespace) -> None:
    gateway = make(max_retries=2)
    daraja.sandbox.fail_next_pushes(10)
    with pytest.raises(UpstreamError) as caught:
        await gateway.stk_push(request())
    assert caught.value.transient and caught.value.code == "500.003.1001"
    assert daraja.sandbox.push_requests == 3


async def test_query_is_retried_on_500(gateway: DarajaGateway, daraja: SimpleNamespace, receiver: SimpleNamespace) -> None:
    accepted = await gateway.stk_push(request())
    await receiver.rec.wait_for(accepted.checkout_request_id)
    daraja.sandbox.fail_next_queries(2)
    assert (await gateway.stk_query(accepted.checkout_request_id)).result_code == "0"
    assert daraja.sandbox.query_requests == 3


@pytest.mark.parametrize(
    ("req", "reason"),
    [
        (request(amount=0), "invalid amount."),
        (request(amount=300_000), "invalid amount."),
        (request(phone="0712345678"), "invalid phone number."),
        (request(phone="2547123"), "invalid phone number."),
        (request(ref="A-VERY-LONG-METER"), "invalid meter number."),
    ],
)
async def test_refused_push_is_not_retried_and_reads_well(
    gateway: DarajaGateway, daraja: SimpleNamespace, req: StkPushRequest, reason: str
) -> None:
    with pytest.raises(UpstreamError) as caught:
        await gateway.stk_push(req)
    assert not caught.value.transient and caught.value.code == "400.002.02"
    assert caught.value.message == f"M-Pesa could not send the payment prompt: {reason}"
    assert daraja.sandbox.push_requests == 1


async def test_fractional_amount_never_leaves(gateway: DarajaGateway, daraja: SimpleNamespace) -> None:
    with pytest.raises(InvalidInput):
        await gateway.stk_push(request(amount=10.5))
    assert daraja.sandbox.push_requests == 0


async def test_second_push_to_a_busy_phone_is_refused(gateway: DarajaGateway, daraja: SimpleNamespace) -> None:
    daraja.sandbox.script_phone(PHONE, "success", delay_s=1.0)
    await gateway.stk_push(request())
    with pytest.raises(UpstreamError) as caught:
        await gateway.stk_push(request())
    assert (caught.value.message, caught.value.code, caught.value.transient) == (DUPLICATE_MESSAGE, "500.001.1001", False)
    assert daraja.sandbox.push_requests == 2  # Daraja's 500 here is a refusal, not an outage


async def test_wrong_passkey_is_a_refusal_not_an_outage(make: Callable[..., DarajaGateway], daraja: SimpleNamespace) -> None:
    with pytest.raises(UpstreamError) as caught:
        await make(passkey="wrong-passkey").stk_push(request())
    assert not caught.value.transient and caught.value.code == "500.001.1001"
    assert "not set up correctly" in caught.value.message and "wrong-passkey" not in caught.value.message
    assert daraja.sandbox.push_requests == 1


async def test_skewed_clock_is_refused(make: Callable[..., DarajaGateway]) -> None:
    gateway = make(clock=lambda: datetime.now(UTC) + timedelta(minutes=20))
    with pytest.raises(UpstreamError) as caught:
        await gateway.stk_push(request())
    assert caught.value.message == "M-Pesa could not send the payment prompt: the server clock is wrong."


async def test_lost_push_answer_is_not_resent(make: Callable[..., DarajaGateway], daraja: SimpleNamespace) -> None:
    gateway = make(timeout_s=0.2)
    daraja.sandbox.slow_next_pushes(1, 0.6)
    with pytest.raises(UpstreamError) as caught:
        await gateway.stk_push(request())
    assert caught.value.transient and caught.value.code == "outcome_unknown"
    assert daraja.sandbox.push_requests == 1 and len(daraja.sandbox.transactions) == 1


async def test_unreachable_daraja_is_transient(make: Callable[..., DarajaGateway]) -> None:
    gateway = make(base_url=f"http://127.0.0.1:{reserve_port()}", max_retries=1)
    with pytest.raises(UpstreamError) as caught:
        await gateway.stk_push(request())
    assert caught.value.transient and caught.value.code == "ConnectError"


# -- logs and pure helpers -------------------------------------------------------------------


async def test_logs_mask_phones_and_hide_secrets(
    gateway: DarajaGateway, daraja: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    daraja.sandbox.fail_next_pushes(1, 429, "500.003.02", "Spike arrest violation")
    with caplog.at_level(logging.DEBUG):
        await gateway.stk_push(request())
    assert "2547*****149" in caplog.text and PHONE not in caplog.text
    [token] = daraja.sandbox.issued_tokens
    for secret in (SECRET, PASSKEY, token):
        assert secret not in caplog.text


def test_mask_phone() -> None:
    assert mask_phone("254712345678") == "2547*****678"
    assert mask_phone("+254 712 345 678") == "2547*****678"
    assert mask_phone("12345678") == "****"  # too short to be a number: nothing of it shown
    assert mask_phone("123") == "****"


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, {"fault": {"faultstring": "Spike arrest violation. Allowed rate : 5ps", "detail": {"errorcode": "x"}}}, Retryable),
        (500, {"errorCode": "500.003.03", "errorMessage": "Quota Violation"}, Retryable),
        (502, {}, Retryable),
        (500, {"errorCode": "500.001.1001", "errorMessage": "Wrong credentials"}, ConfigurationError),
        (500, {"errorCode": "500.001.1001", "errorMessage": "Merchant does not exist"}, ConfigurationError),
        (500, {"errorCode": "500.001.1001",
               "errorMessage": "Unable to lock subscriber, a transaction is already in process for the current subscriber"},
         Refused),
        (400, {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid Amount"}, Refused),
        (500, {"errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"}, None),
    ],
)
def test_answer_classification(status: int, body: dict[str, Any], kind: type[Exception] | None) -> None:
    answer = Answer(status, body)
    if kind is None:
        check_answer(answer)
        assert answer.processing
        return
    with pytest.raises(kind) as caught:
        check_answer(answer)
    assert type(caught.value) is kind
