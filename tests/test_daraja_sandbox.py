"""The Daraja sandbox on the wire: raw HTTP against a real loopback server, shapes as Safaricom's."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.daraja import create_daraja_sandbox
from sandbox.daraja_rules import NAIROBI
from tests.servers import serve

KEY, SECRET, SHORTCODE = "test-consumer-key", "test-consumer-secret", "174379"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
PHONE = "254708374149"


class Receiver:
    """Stands in for LipaMeter's callback endpoint and keeps every body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/mpesa/callback/{token}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self._lock:
            self.bodies.append(body)
        return JSONResponse({"ResultCode": 0, "ResultDesc": "Accepted"})

    def for_checkout(self, checkout_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [b for b in self.bodies if b["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_id]

    async def wait_for(self, checkout_id: str, count: int = 1, timeout_s: float = 3.0) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found := self.for_checkout(checkout_id)) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} callback(s) for {checkout_id}, got {len(found)}")
            await asyncio.sleep(0.01)
        return found


@pytest.fixture(scope="module")
def receiver() -> Iterator[SimpleNamespace]:
    rec = Receiver()
    with serve(rec.app) as server:
        yield SimpleNamespace(rec=rec, callback_url=f"{server.url}/mpesa/callback/s3cret-token")


@pytest.fixture(scope="module")
def daraja_server() -> Iterator[SimpleNamespace]:
    app = create_daraja_sandbox(
        consumer_key=KEY, consumer_secret=SECRET, shortcode=SHORTCODE, passkey=PASSKEY, callback_delay_s=0.05
    )
    with serve(app) as server:
        yield SimpleNamespace(url=server.url, sandbox=app.state.daraja)


@pytest.fixture
def daraja(daraja_server: SimpleNamespace) -> Iterator[SimpleNamespace]:
    daraja_server.sandbox.reset()
    yield daraja_server
    daraja_server.sandbox.reset()


async def eventually(predicate: Any, timeout_s: float = 3.0) -> None:
    """The sandbox records a callback's answer just after the receiver saw it: poll, don't sleep."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def nairobi_timestamp(shift: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + shift).astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


def credentials(timestamp: str | None = None) -> dict[str, str]:
    ts = timestamp or nairobi_timestamp()
    password = base64.b64encode(f"{SHORTCODE}{PASSKEY}{ts}".encode()).decode()
    return {"BusinessShortCode": SHORTCODE, "Password": password, "Timestamp": ts}


def push_body(callback_url: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        **credentials(),
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 500,
        "PartyA": PHONE,
        "PartyB": SHORTCODE,
        "PhoneNumber": PHONE,
        "CallBackURL": callback_url,
        "AccountReference": "MTR-001",
        "TransactionDesc": "Electricity",
    }
    body.update(overrides)
    return body


@pytest.fixture
async def api(daraja: SimpleNamespace) -> Any:
    async with httpx.AsyncClient(base_url=daraja.url, timeout=5) as client:
        token = (await client.get("/oauth/v1/generate?grant_type=client_credentials", auth=(KEY, SECRET))).json()
        client.headers["Authorization"] = f"Bearer {token['access_token']}"
        yield client


async def push(api: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await api.post("/mpesa/stkpush/v1/processrequest", json=body)


async def query(api: httpx.AsyncClient, checkout_id: str, **overrides: Any) -> httpx.Response:
    return await api.post("/mpesa/stkpushquery/v1/query", json={**credentials(), "CheckoutRequestID": checkout_id, **overrides})


# -- OAuth and bearer tokens -----------------------------------------------------------------


async def test_oauth_issues_token_with_string_expiry(daraja: SimpleNamespace) -> None:
    async with httpx.AsyncClient(base_url=daraja.url) as client:
        r = await client.get("/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=(KEY, SECRET))
    assert r.status_code == 200
    assert set(r.json()) == {"access_token", "expires_in"} and r.json()["expires_in"] == "3599"
    assert daraja.sandbox.token_requests == 1


@pytest.mark.parametrize(
    ("auth", "grant", "code", "message"),
    [
        ((KEY, "wrong"), "client_credentials", "400.008.01", "Invalid Authentication passed"),
        (None, "client_credentials", "400.008.01", "Invalid Authentication passed"),
        ((KEY, SECRET), "password", "400.008.02", "Invalid grant type passed"),
        ((KEY, SECRET), None, "400.008.02", "Invalid grant type passed"),
    ],
)
async def test_oauth_refusals(daraja: SimpleNamespace, auth: Any, grant: str | None, code: str, message: str) -> None:
    params = {"grant_type": grant} if grant else {}
    async with httpx.AsyncClient(base_url=daraja.url) as client:
        r = await client.get("/oauth/v1/generate", params=params, auth=auth)
    assert r.status_code == 400
    assert r.json() == {"requestId": "", "errorCode": code, "errorMessage": message}


async def test_api_needs_a_live_bearer_token(api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any) -> None:
    daraja.sandbox.expire_tokens()
    r = await push(api, push_body(receiver.callback_url))
    assert r.status_code == 404
    assert r.json()["errorCode"] == "404.001.03" and r.json()["errorMessage"] == "Invalid Access Token"
    assert re.fullmatch(r"\d+-\d+-1", r.json()["requestId"])
    r = await api.post("/mpesa/stkpush/v1/processrequest", json={}, headers={"Authorization": "Basic abc"})
    assert r.status_code == 404 and r.json()["errorCode"] == "404.001.04"


# -- STK push validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"BusinessShortCode": "600000"}, "BusinessShortCode"),
        ({"Timestamp": "2024-01-01 10:00"}, "Timestamp"),
        ({"TransactionType": "CustomerPayBill"}, "TransactionType"),
        ({"Amount": 10.5}, "Amount"),
        ({"Amount": 0}, "Amount"),
        ({"Amount": -5}, "Amount"),
        ({"Amount": "12.5"}, "Amount"),
        ({"Amount": True}, "Amount"),
        ({"Amount": 250_001}, "Amount"),
        ({"PartyA": "0708374149"}, "PartyA"),
        ({"PhoneNumber": "25470837414"}, "PhoneNumber"),
        ({"PhoneNumber": "254208374149"}, "PhoneNumber"),
        ({"CallBackURL": "not a url"}, "CallBackURL"),
        ({"AccountReference": "ABCDEFGHIJKLM"}, "AccountReference"),
        ({"AccountReference": ""}, "AccountReference"),
        ({"TransactionDesc": "Electricity top-up"}, "TransactionDesc"),
    ],
)
async def test_push_rejects_bad_fields_like_daraja(
    api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any, override: dict[str, Any], field: str
) -> None:
    body = push_body(receiver.callback_url, **override)
    if "Timestamp" in override:  # keep the Password consistent so the Timestamp rule itself is hit
        body["Password"] = base64.b64encode(f"{SHORTCODE}{PASSKEY}{override['Timestamp']}".encode()).decode()
    r = await push(api, body)
    assert r.status_code == 400
    assert r.json()["errorCode"] == "400.002.02"
    assert r.json()["errorMessage"] == f"Bad Request - Invalid {field}"
    assert daraja.sandbox.transactions == []


async def test_push_rejects_stale_timestamp_and_wrong_password(api: httpx.AsyncClient, receiver: Any) -> None:
    stale = nairobi_timestamp(timedelta(minutes=-11))
    r = await push(api, push_body(receiver.callback_url, **credentials(stale)))
    assert (r.status_code, r.json()["errorMessage"]) == (400, "Bad Request - Invalid Timestamp")
    r = await push(api, push_body(receiver.callback_url, Password=base64.b64encode(b"nope").decode()))
    assert r.status_code == 500
    assert (r.json()["errorCode"], r.json()["errorMessage"]) == ("500.001.1001", "Wrong credentials")


@pytest.mark.parametrize("amount", [1, "100", 100.0, "250000"])
async def test_push_accepts_whole_amounts_in_any_form(api: httpx.AsyncClient, receiver: Any, amount: Any) -> None:
    r = await push(api, push_body(receiver.callback_url, Amount=amount))
    assert r.status_code == 200, r.text


async def test_push_answer_has_daraja_shape(api: httpx.AsyncClient, receiver: Any) -> None:
    r = await push(api, push_body(receiver.callback_url, BusinessShortCode=int(SHORTCODE)))
    body = r.json()
    assert r.status_code == 200
    assert set(body) == {"MerchantRequestID", "CheckoutRequestID", "ResponseCode", "ResponseDescription", "CustomerMessage"}
    assert re.fullmatch(r"\d{5}-\d{8}-1", body["MerchantRequestID"])
    assert re.fullmatch(r"ws_CO_\d{14}\d+", body["CheckoutRequestID"])
    assert body["CheckoutRequestID"][6:14] == datetime.now(NAIROBI).strftime("%d%m%Y")
    assert body["ResponseCode"] == "0"
    assert body["ResponseDescription"] == body["CustomerMessage"] == "Success. Request accepted for processing"


async def test_second_push_to_a_busy_phone_is_refused(api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any) -> None:
    daraja.sandbox.script_phone(PHONE, "success", delay_s=0.5)
    assert (await push(api, push_body(receiver.callback_url))).status_code == 200
    r = await push(api, push_body(receiver.callback_url))
    assert r.status_code == 500
    assert r.json()["errorCode"] == "500.001.1001"
    assert r.json()["errorMessage"].startswith("Unable to lock subscriber")
    other = await push(api, push_body(receiver.callback_url, PartyA="254711000001", PhoneNumber="254711000001"))
    assert other.status_code == 200


# -- callbacks -------------------------------------------------------------------------------

FAILURES = [
    ("cancelled", 1032, "Request cancelled by user"),
    ("unreachable", 1037, "DS timeout user cannot be reached"),
    ("wrong_pin", 2001, "The initiator information is invalid."),
    ("insufficient_funds", 1, "The balance is insufficient for the transaction."),
]


async def test_success_callback_has_safaricoms_exact_shape(
    api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any
) -> None:
    accepted = (await push(api, push_body(receiver.callback_url, Amount=500))).json()
    [body] = await receiver.rec.wait_for(accepted["CheckoutRequestID"])
    callback = body["Body"]["stkCallback"]
    assert list(body) == ["Body"] and list(body["Body"]) == ["stkCallback"]
    assert list(callback) == ["MerchantRequestID", "CheckoutRequestID", "ResultCode", "ResultDesc", "CallbackMetadata"]
    assert callback["MerchantRequestID"] == accepted["MerchantRequestID"]
    assert (callback["ResultCode"], callback["ResultDesc"]) == (0, "The service request is processed successfully.")
    items = callback["CallbackMetadata"]["Item"]
    assert [i["Name"] for i in items] == ["Amount", "MpesaReceiptNumber", "TransactionDate", "PhoneNumber"]
    amount, receipt, date, phone = (i["Value"] for i in items)
    assert amount == 500.0 and isinstance(amount, float)
    assert re.fullmatch(r"[A-Z0-9]{10}", receipt)
    assert isinstance(date, int) and str(date).startswith(datetime.now(NAIROBI).strftime("%Y%m%d"))
    assert phone == int(PHONE)
    txn = daraja.sandbox.transaction(accepted["CheckoutRequestID"])
    await eventually(lambda: len(txn.callbacks) == 1)
    assert txn.receipt == receipt and txn.callbacks[0]["status"] == 200


@pytest.mark.parametrize(("outcome", "code", "desc"), FAILURES)
async def test_failure_callbacks_have_no_metadata(
    api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any, outcome: str, code: int, desc: str
) -> None:
    daraja.sandbox.script_next(outcome)
    accepted = (await push(api, push_body(receiver.callback_url))).json()
    [body] = await receiver.rec.wait_for(accepted["CheckoutRequestID"])
    assert body == {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": accepted["MerchantRequestID"],
                "CheckoutRequestID": accepted["CheckoutRequestID"],
                "ResultCode": code,
                "ResultDesc": desc,
            }
        }
    }
    settled = (await query(api, accepted["CheckoutRequestID"])).json()
    assert (settled["ResultCode"], settled["ResultDesc"]) == (str(code), desc)


async def test_balance_item_paid_amount_and_int_style(api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any) -> None:
    daraja.sandbox.script_next("success", balance_item=True, paid_amount=450, amount_style="int")
    accepted = (await push(api, push_body(receiver.callback_url, Amount=500))).json()
    [body] = await receiver.rec.wait_for(accepted["CheckoutRequestID"])
    items = body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    assert [i["Name"] for i in items] == ["Amount", "MpesaReceiptNumber", "Balance", "TransactionDate", "PhoneNumber"]
    assert items[2] == {"Name": "Balance"}
    assert items[0]["Value"] == 450 and isinstance(items[0]["Value"], int)


async def test_duplicate_callback_is_posted_three_times(api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any) -> None:
    daraja.sandbox.script_phone(PHONE, "duplicate_callback")
    accepted = (await push(api, push_body(receiver.callback_url))).json()
    bodies = await receiver.rec.wait_for(accepted["CheckoutRequestID"], count=3)
    assert bodies[0] == bodies[1] == bodies[2]
    await eventually(lambda: len(daraja.sandbox.transaction(accepted["CheckoutRequestID"]).callbacks) == 3)


async def test_lost_callback_settles_but_never_posts(api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any) -> None:
    daraja.sandbox.script_next("lost_callback")
    accepted = (await push(api, push_body(receiver.callback_url))).json()
    await asyncio.sleep(0.3)
    assert receiver.rec.for_checkout(accepted["CheckoutRequestID"]) == []
    settled = (await query(api, accepted["CheckoutRequestID"])).json()
    assert (settled["ResultCode"], settled["ResultDesc"]) == ("0", "The service request is processed successfully.")


async def test_receipts_are_unique(api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any) -> None:
    ids = []
    for n in range(5):
        phone = f"25471100000{n}"
        ids.append((await push(api, push_body(receiver.callback_url, PartyA=phone, PhoneNumber=phone))).json())
    bodies = [(await receiver.rec.wait_for(a["CheckoutRequestID"]))[0] for a in ids]
    receipts = {b["Body"]["stkCallback"]["CallbackMetadata"]["Item"][1]["Value"] for b in bodies}
    assert len(receipts) == 5


# -- STK push query --------------------------------------------------------------------------


async def test_query_pending_then_settled(api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any) -> None:
    daraja.sandbox.script_next("success", delay_s=0.3)
    checkout_id = (await push(api, push_body(receiver.callback_url))).json()["CheckoutRequestID"]
    pending = await query(api, checkout_id)
    assert pending.status_code == 500
    assert pending.json()["errorCode"] == "500.001.1001"
    assert pending.json()["errorMessage"] == "The transaction is being processed"
    await receiver.rec.wait_for(checkout_id)
    settled = await query(api, checkout_id)
    assert settled.status_code == 200
    assert settled.json() == {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": daraja.sandbox.transaction(checkout_id).merchant_request_id,
        "CheckoutRequestID": checkout_id,
        "ResultCode": "0",
        "ResultDesc": "The service request is processed successfully.",
    }


async def test_query_checks_credentials_and_id(api: httpx.AsyncClient) -> None:
    r = await query(api, "ws_CO_000000000000000000")
    assert (r.status_code, r.json()["errorMessage"]) == (400, "Bad Request - Invalid CheckoutRequestID")
    r = await query(api, "ws_CO_000000000000000000", Password="bad")
    assert (r.status_code, r.json()["errorMessage"]) == (500, "Wrong credentials")
    r = await query(api, "ws_CO_000000000000000000", BusinessShortCode="999999")
    assert (r.status_code, r.json()["errorMessage"]) == (400, "Bad Request - Invalid BusinessShortCode")


# -- scripted faults and the HTTP control routes ---------------------------------------------


async def test_fail_next_pushes_answers_the_fault_once(api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any) -> None:
    daraja.sandbox.fail_next_pushes(1, 429, "500.003.02", "Spike arrest violation")
    r = await push(api, push_body(receiver.callback_url))
    assert r.status_code == 429 and r.json()["errorCode"] == "500.003.02"
    assert (await push(api, push_body(receiver.callback_url))).status_code == 200


async def test_http_control_routes(api: httpx.AsyncClient, daraja: SimpleNamespace, receiver: Any) -> None:
    r = await api.post("/sandbox/script", json={"phone": PHONE, "outcome": "cancelled"})
    assert r.json() == {"ok": True}
    r = await api.post("/sandbox/script", json={"outcome": "push_error", "count": 2, "status": 503})
    assert r.status_code == 200
    assert (await api.post("/sandbox/script", json={"outcome": "teleport"})).status_code == 400
    assert (await api.post("/sandbox/script", json={"outcome": "success", "colour": 1})).status_code == 400
    assert (await push(api, push_body(receiver.callback_url))).status_code == 503
    assert (await push(api, push_body(receiver.callback_url))).status_code == 503
    checkout_id = (await push(api, push_body(receiver.callback_url))).json()["CheckoutRequestID"]
    [body] = await receiver.rec.wait_for(checkout_id)
    assert body["Body"]["stkCallback"]["ResultCode"] == 1032
    await eventually(lambda: daraja.sandbox.transactions[0].callbacks)
    listing = (await api.get("/sandbox/transactions")).json()
    [txn] = listing["transactions"]
    assert txn["checkout_request_id"] == checkout_id and txn["state"] == "settled" and txn["result_code"] == 1032
    assert len(txn["callbacks"]) == 1
    assert (await api.post("/sandbox/reset")).json() == {"ok": True}
    empty = {"transactions": [], "token_requests": 0, "push_requests": 0, "query_requests": 0}
    assert (await api.get("/sandbox/transactions")).json() == empty


async def test_invalid_json_payload(api: httpx.AsyncClient) -> None:
    r = await api.post("/mpesa/stkpush/v1/processrequest", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["errorCode"] == "400.002.05"


async def test_callback_to_a_dead_url_is_recorded_not_fatal(api: httpx.AsyncClient, daraja: SimpleNamespace) -> None:
    checkout_id = (await push(api, push_body("http://127.0.0.1:9/mpesa/callback/x"))).json()["CheckoutRequestID"]
    txn = daraja.sandbox.transaction(checkout_id)
    await eventually(lambda: txn.callbacks)
    assert txn.callbacks[0]["status"] is None and txn.callbacks[0]["error"]
    assert (await api.get("/sandbox/transactions")).status_code == 200
