"""The Daraja sandbox learns what the real one does (issue 10): callbacks posted again after a non-200,
a success after a failure, spike-arrest 429s, masked phone numbers, a Balance item with a string value."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.payments.callbacks import parse_stk_callback
from gateways.daraja import DarajaGateway
from tests.servers import serve
from tests.stack import Stack
from tests.test_daraja_gateway import request
from tests.test_daraja_sandbox import KEY, PASSKEY, SECRET, SHORTCODE, daraja, daraja_server  # noqa: F401


class FlakyReceiver:
    """A callback endpoint that answers 503 to the first `failures` posts, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures, self.bodies, self._lock = failures, [], threading.Lock()
        self.app = Starlette(routes=[Route("/payments/callback/{token}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self._lock:
            self.bodies.append(body)
            failing = len(self.bodies) <= self.failures
        return JSONResponse({"error": "busy"} if failing else {"ResultCode": 0}, status_code=503 if failing else 200)

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.bodies) < count:
            assert asyncio.get_running_loop().time() < deadline, f"expected {count} posts, got {len(self.bodies)}"
            await asyncio.sleep(0.01)
        return list(self.bodies)


@pytest.fixture
def flaky():
    receiver = FlakyReceiver(failures=2)
    with serve(receiver.app) as server:
        yield SimpleNamespace(rec=receiver, url=f"{server.url}/payments/callback/tok")


def gateway_for(daraja: SimpleNamespace, callback_url: str, **kw: Any) -> DarajaGateway:
    return DarajaGateway(base_url=daraja.url, consumer_key=KEY, consumer_secret=SECRET, shortcode=SHORTCODE,
                         passkey=PASSKEY, callback_url=callback_url, timeout_s=2, backoff_base_s=0.01, **kw)


async def test_callback_is_posted_again_after_non_200(daraja, flaky) -> None:
    daraja.sandbox.callback_retry_delay_s = 0.01
    gateway = gateway_for(daraja, flaky.url)
    try:
        accepted = await gateway.stk_push(request())
        bodies = await flaky.rec.wait_for(3)
        assert all(b == bodies[0] for b in bodies)
        await asyncio.sleep(0.1)
        assert len(flaky.rec.bodies) == 3  # stops once answered 200
        txn = daraja.sandbox.transaction(accepted.checkout_request_id)
        assert [c["status"] for c in txn.callbacks] == [503, 503, 200]
    finally:
        await gateway.aclose()


async def test_late_success_follows_the_failure_and_the_query_keeps_the_failure(daraja, flaky) -> None:
    flaky.rec.failures = 0
    daraja.sandbox.script_next("late_success", late_after_s=0.05)
    gateway = gateway_for(daraja, flaky.url)
    try:
        accepted = await gateway.stk_push(request())
        first, second = [b["Body"]["stkCallback"] for b in await flaky.rec.wait_for(2)]
        assert (first["ResultCode"], "CallbackMetadata" in first) == (1037, False)
        assert second["ResultCode"] == 0 and second["CheckoutRequestID"] == accepted.checkout_request_id
        receipt = {i["Name"]: i.get("Value") for i in second["CallbackMetadata"]["Item"]}["MpesaReceiptNumber"]
        assert receipt and daraja.sandbox.transaction(accepted.checkout_request_id).receipt == receipt
        assert (await gateway.stk_query(accepted.checkout_request_id)).result_code == "1037"
    finally:
        await gateway.aclose()


async def test_spike_arrest_answers_apigee_429_and_the_gateway_retries(daraja, flaky) -> None:
    token = httpx.get(f"{daraja.url}/oauth/v1/generate", params={"grant_type": "client_credentials"},
                      auth=(KEY, SECRET)).json()["access_token"]
    daraja.sandbox.spike_arrest_next(1)
    raw = httpx.post(f"{daraja.url}/mpesa/stkpush/v1/processrequest", json={},
                     headers={"Authorization": f"Bearer {token}"})
    assert raw.status_code == 429
    assert raw.json()["fault"]["detail"]["errorcode"] == "policies.ratelimit.SpikeArrestViolation"
    daraja.sandbox.spike_arrest_next(2)
    daraja.sandbox.spike_arrest_next(1, api="query")
    gateway = gateway_for(daraja, flaky.url)
    try:
        accepted = await gateway.stk_push(request())
        assert daraja.sandbox.push_requests == 1 + 3
        assert (await gateway.stk_query(accepted.checkout_request_id)).processing
        assert daraja.sandbox.query_requests == 2
    finally:
        await gateway.aclose()


async def test_masked_phone_and_string_balance_parse(daraja, flaky) -> None:
    flaky.rec.failures = 0
    daraja.sandbox.script_next("success", masked_phone=True, balance_value="KES 1,000.00")
    gateway = gateway_for(daraja, flaky.url)
    try:
        await gateway.stk_push(request(phone="254708374149"))
        [body] = await flaky.rec.wait_for(1)
    finally:
        await gateway.aclose()
    items = {i["Name"]: i.get("Value") for i in body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]}
    assert items["PhoneNumber"] == "254708***149" and items["Balance"] == "KES 1,000.00"
    parsed = parse_stk_callback(httpx.Response(200, json=body).content)
    assert parsed.succeeded and parsed.phone == "254708***149" and parsed.unreadable == ()


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url)
    yield stack
    stack.stop()


def test_late_success_end_to_end_lands_on_the_review_list(stack):
    stack.daraja.script_next("late_success", late_after_s=0.2)
    answer = stack.pay(amount=300, phone="0755000444")
    assert answer.status_code == 200, answer.text
    payment = stack.wait_for(answer.json()["paymentId"], lambda p: p["status"] == "NEEDS_REVIEW")
    assert payment["reviewReason"] == "M-Pesa says paid after we settled it as failed"
    assert payment["mpesaReceiptNumber"] and payment["topUpStatus"] is None
    outcomes = [r.outcome for r in stack.sql("SELECT outcome FROM mpesa_callbacks ORDER BY id")]
    assert outcomes == ["settled", "late_success"]


def test_masked_phone_payment_completes_end_to_end(stack):
    stack.daraja.script_next("success", masked_phone=True, balance_value="0.00")
    answer = stack.pay(amount=200)
    payment = stack.wait_for(answer.json()["paymentId"], lambda p: p["topUpStatus"] == "APPLIED", timeout=15)
    assert payment["status"] == "COMPLETED"
