"""Money in, end to end: the app under uvicorn, the Daraja sandbox on its own port, real HTTP both
ways, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import samples
from tests.stack import CALLBACK_TOKEN, Stack


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url)
    yield stack
    stack.stop()


def counts(stack: Stack) -> dict:
    rows = stack.sql("SELECT (SELECT count(*) FROM payments) p, (SELECT count(*) FROM topups) t, "
                     "(SELECT count(*) FROM mpesa_callbacks) c, (SELECT count(*) FROM jobs WHERE kind = 'topup') j")
    return dict(rows[0]._mapping)


def test_pay_callback_completed_credited_and_receipt_sent(stack):
    answer = stack.pay(amount=500.0)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True and body["message"] == "Payment initiated"
    assert body["checkoutRequestId"].startswith("ws_CO_") and body["merchantRequestId"]
    assert body["mpesaTransactionId"] == body["paymentId"]
    done = stack.wait_for(body["mpesaTransactionId"], lambda p: p["topUpStatus"] == "APPLIED")
    assert done["status"] == "COMPLETED"
    assert done["amount"] == 500 and done["phoneNumber"] == "254712345678" and done["meterName"] == "Flat A1"
    txn = stack.daraja.transaction(body["checkoutRequestId"])
    assert done["mpesaReceiptNumber"] == txn.receipt and len(txn.receipt) == 10
    assert done["transactionDate"].endswith("+03:00")
    assert (done["balanceBefore"], done["balanceAfter"], done["unitsAdded"]) == (100, 600, 500)
    assert stack.payment(body["checkoutRequestId"])["id"] == body["paymentId"]  # by CheckoutRequestID too
    assert txn.account_reference == "A101"
    assert counts(stack) == {"p": 1, "t": 1, "c": 1, "j": 1}
    assert stack.tuya.total_credits("dev-a101") == 500
    _wait(lambda: stack.sms.messages(to="+254712345678"))
    [sms] = stack.sms.messages(to="+254712345678")
    assert txn.receipt in sms.message and "A101" in sms.message and "KES 600" in sms.message


@pytest.mark.parametrize("outcome,status,code", [
    ("cancelled", "CANCELLED", "1032"), ("wrong_pin", "FAILED", "2001"),
    ("insufficient_funds", "FAILED", "1"), ("unreachable", "FAILED", "1037"),
])
def test_failed_payments(stack, outcome, status, code):
    stack.daraja.script_phone("254712345678", outcome)
    ref = stack.pay().json()["paymentId"]
    done = stack.wait_for(ref, lambda p: p["status"] != "PENDING")
    assert (done["status"], done["resultCode"], done["topUpStatus"]) == (status, code, None)
    assert counts(stack)["t"] == 0
    assert stack.pay().status_code == 200  # the phone is free again


def test_duplicate_callbacks_make_one_transition(stack):
    stack.daraja.script_phone("254712345678", "duplicate_callback")
    body = stack.pay().json()
    stack.wait_for(body["paymentId"], lambda p: p["status"] == "COMPLETED")
    txn = stack.daraja.transaction(body["checkoutRequestId"])
    _wait(lambda: len(txn.callbacks) == 3)
    assert counts(stack) == {"p": 1, "t": 1, "c": 3, "j": 1}
    outcomes = sorted(r.outcome for r in stack.sql("SELECT outcome FROM mpesa_callbacks"))
    assert outcomes == ["completed", "duplicate", "duplicate"]


def test_concurrent_duplicate_callbacks_make_one_transition(stack):
    stack.daraja.script_phone("254712345678", "lost_callback")
    body = stack.pay(amount=250).json()
    raw = samples.with_ids(samples.SUCCESS, checkout=body["checkoutRequestId"], amount=250.0)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: httpx.post(stack.callback_url, content=raw, timeout=20), range(8)))
    assert [a.json() for a in answers] == [{"ResultCode": 0, "ResultDesc": "Accepted"}] * 8
    assert stack.payment(body["paymentId"])["status"] == "COMPLETED"
    assert counts(stack) == {"p": 1, "t": 1, "c": 8, "j": 1}


def test_lost_callback_settled_by_reconcile_sweep(database_url):
    stack = Stack(database_url, reconcile_after_s=0.3)
    try:
        stack.daraja.script_phone("254712345678", "lost_callback")
        body = stack.pay().json()
        done = stack.wait_for(body["paymentId"], lambda p: p["topUpStatus"] == "APPLIED")
        assert done["status"] == "COMPLETED" and done["mpesaReceiptNumber"] is None  # a query has no receipt
        assert counts(stack) == {"p": 1, "t": 1, "c": 0, "j": 1}
    finally:
        stack.stop()


def test_unanswered_payment_goes_to_review_after_cutoff(database_url):
    # reconcile_after_s well above the push's answer time: a payment still `requested` when the sweep looks
    # goes to review as "no answer recorded", which a loaded CI machine once made of a 0.2 s setting.
    stack = Stack(database_url, reconcile_after_s=1.0, reconcile_give_up_s=1.5, callback_delay_s=60)
    try:
        body = stack.pay().json()
        done = stack.wait_for(body["paymentId"], lambda p: p["status"] != "PENDING")
        assert done["status"] == "NEEDS_REVIEW" and "cutoff" in done["reviewReason"]
        assert counts(stack)["t"] == 0
    finally:
        stack.stop()


def test_verify_callbacks_confirms_with_stk_query(database_url):
    stack = Stack(database_url, verify_callbacks=True)
    try:
        body = stack.pay().json()
        done = stack.wait_for(body["paymentId"], lambda p: p["status"] != "PENDING")
        assert done["status"] == "COMPLETED" and done["mpesaReceiptNumber"]
        assert stack.sql("SELECT outcome FROM mpesa_callbacks")[0].outcome == "awaiting_verification"
    finally:
        stack.stop()


def test_wrong_callback_token_writes_nothing(stack):
    stack.daraja.script_phone("254712345678", "lost_callback")
    body = stack.pay().json()
    raw = samples.with_ids(samples.SUCCESS, checkout=body["checkoutRequestId"], amount=100)
    for token in ("wrong", CALLBACK_TOKEN[:-1], CALLBACK_TOKEN + "x"):
        assert httpx.post(f"{stack.url}/mpesa/callback/{token}", content=raw).status_code == 404
    assert counts(stack)["c"] == 0
    assert stack.payment(body["paymentId"])["status"] == "PENDING"


def test_amount_mismatch_goes_to_review(stack):
    stack.daraja.script_phone("254712345678", "success", paid_amount=1)
    body = stack.pay(amount=500).json()
    done = stack.wait_for(body["paymentId"], lambda p: p["status"] != "PENDING")
    assert done["status"] == "NEEDS_REVIEW" and "KES 500" in done["reviewReason"]
    assert done["topUpStatus"] is None and counts(stack)["t"] == 0


def test_unknown_checkout_kept_as_orphan(stack):
    raw = samples.with_ids(samples.SUCCESS, checkout="ws_CO_nobody_asked", amount=100)
    assert httpx.post(stack.callback_url, content=raw).json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    assert [tuple(r) for r in stack.sql("SELECT outcome, payment_id FROM mpesa_callbacks")] == [("orphan", None)]
    assert counts(stack)["t"] == 0


def test_malformed_callback_is_kept_and_refused(stack):
    answer = httpx.post(stack.callback_url, content=b"{not json")
    assert answer.status_code == 400
    assert stack.sql("SELECT outcome, body FROM mpesa_callbacks")[0].outcome == "malformed"


def test_spike_arrest_and_5xx_are_retried(stack):
    stack.daraja.fail_next_pushes(1, status=429, error_code="500.003.02", message="Spike arrest violation")
    stack.daraja.fail_next_pushes(1, status=503, error_code="503.001.01", message="Service Unavailable")
    answer = stack.pay()
    assert answer.status_code == 200, answer.text


def test_daraja_refusal_becomes_502_with_readable_message(stack):
    stack.daraja.fail_next_pushes(1, status=400, error_code="400.002.02", message="Bad Request - Invalid PhoneNumber")
    answer = stack.pay()
    assert answer.status_code == 502
    body = answer.json()
    assert body["success"] is False and body["code"] == "400.002.02" and "phone" in body["message"].lower()
    assert stack.payment(body["paymentId"])["status"] == "PUSH_FAILED"
    assert stack.pay().status_code == 200  # not stuck


def test_daraja_down_becomes_502(stack):
    stack.daraja.fail_next_pushes(10, status=500, error_code="500.003.1001", message="Internal Server Error")
    answer = stack.pay()
    assert answer.status_code == 502 and answer.json()["success"] is False


def test_idempotency_key_returns_first_answer_and_409_otherwise(stack):
    # The prompt stays unanswered: with the sandbox's callback after 0.1 s, a busy machine saw the first
    # payment paid (and the phone free again) before the third request, which then got 200, not 409.
    stack.daraja.script_phone("254712345678", "lost_callback")
    first = stack.pay(headers={"Idempotency-Key": "order-77"})
    again = stack.pay(headers={"Idempotency-Key": "order-77"})
    assert first.status_code == again.status_code == 200
    assert again.json()["paymentId"] == first.json()["paymentId"]
    assert again.json()["checkoutRequestId"] == first.json()["checkoutRequestId"]
    refused = stack.pay()
    assert refused.status_code == 409 and refused.json()["code"] == "payment_pending"
    other = stack.pay(amount=300, headers={"Idempotency-Key": "order-77"})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_mismatch"
    assert len(stack.daraja.transactions) == 1 and counts(stack)["p"] == 1


BAD_BODIES = [
    ({"amount": 0}, 422, "amount_out_of_range"), ({"amount": -5}, 422, "amount_out_of_range"),
    ({"amount": 10.5}, 422, "invalid_amount"), ({"amount": "abc"}, 422, "invalid_amount"),
    ({"amount": 70_001}, 422, "amount_out_of_range"), ({"amount": None}, 400, "missing_field"),
    ({"phone": "0712"}, 422, "invalid_phone"), ({"phone": "+1 555 123 4567"}, 422, "invalid_phone"),
    ({"phone": "phone"}, 422, "invalid_phone"), ({"meter": "NOPE"}, 404, "meter_not_found"),
    ({"meter": "OFF1"}, 422, "meter_inactive"), ({"meter": ""}, 400, "missing_field"),
]


@pytest.mark.parametrize("change,status,code", BAD_BODIES)
def test_bad_input_is_refused_and_writes_nothing(stack, change, status, code):
    args = {"amount": 100, "phone": "0712345678", "meter": "A101"}
    args.update(change)
    answer = stack.pay(**args)
    assert answer.status_code == status, answer.text
    assert answer.json() == {"success": False, "message": answer.json()["message"], "code": code}
    assert counts(stack)["p"] == 0 and stack.daraja.transactions == []


def test_non_json_wrong_keys_and_big_bodies_refused(stack):
    post = stack.client.post
    assert post("/mpesa/payments", content=b"amount=5").json()["code"] == "invalid_json"
    assert post("/mpesa/payments", content=b"[1]").status_code == 400
    assert post("/mpesa/payments", content=b"x" * 70_000).status_code == 413
    assert httpx.post(f"{stack.url}/mpesa/payments", json={}).status_code == 401
    assert httpx.post(f"{stack.url}/mpesa/payments", json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{stack.url}/mpesa/payments/x").status_code == 401
    assert stack.client.get("/mpesa/payments/does-not-exist").status_code == 404
    assert httpx.post(stack.callback_url, content=b"x" * 70_000).status_code == 413
    assert counts(stack) == {"p": 0, "t": 0, "c": 0, "j": 0}


def test_health_ready_metrics_openapi(stack):
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{stack.url}/readyz").json()["database"] == "ok"
    stack.pay()
    assert 'lipameter_payments_started_total{channel="api"} 1.0' in httpx.get(f"{stack.url}/metrics").text
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    assert set(spec["paths"]) >= {"/mpesa/payments", "/mpesa/payments/{id}", "/mpesa/callback/{token}"}


def _wait(predicate, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
