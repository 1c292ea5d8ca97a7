"""The Daraja sandbox's Customer To Business half: Register URL (v1 and v2) and "simulate C2B".

A simulated payment does what M-Pesa does for "Lipa na M-Pesa -> Pay Bill": when external validation
is enabled for the shortcode it POSTs the validation request to the registered ValidationURL and goes
on only if the answer is ResultCode 0 (or, with no answer in time, as ResponseType says); then it
POSTs the confirmation to the ConfirmationURL. Outcomes are scriptable (`script_c2b`, or
POST /sandbox/c2b): `validation_timeout` (the validation answer is ignored, as if late),
`duplicate_confirmation` (the confirmation is posted `copies` times) and `msisdn_in_clear` (v1 style;
by default the MSISDN is hashed, as Daraja v2 sends it). An unknown account needs no script: pay one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.daraja_rules import DarajaError

log = logging.getLogger("lipameter.sandbox.daraja")
NAIROBI = timezone(timedelta(hours=3))
RESPONSE_TYPES = ("Completed", "Cancelled")
COMMANDS = {"CustomerPayBillOnline": "Pay Bill", "CustomerBuyGoodsOnline": "Buy Goods"}
C2B_OUTCOMES = ("normal", "validation_timeout", "duplicate_confirmation")
POST_TIMEOUT_S = 8.0


@dataclass
class C2bScript:
    outcome: str = "normal"
    copies: int = 2  # duplicate_confirmation: how many times the confirmation is posted
    msisdn_in_clear: bool = False


@dataclass
class C2bPayment:
    trans_id: str
    shortcode: str
    amount: str
    account: str
    msisdn: str
    script: C2bScript
    command: str = "CustomerPayBillOnline"
    validation: dict[str, Any] | None = None  # {"status", "answer"} when a validation was posted
    confirmations: list[dict[str, Any]] = field(default_factory=list)  # {"status", "error"} per post
    outcome: str = "pending"  # confirmed | rejected | cancelled | pending

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class C2bState:
    """Registered URLs per shortcode, scripts and simulated payments. One lock, never awaited under."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.registrations: dict[str, dict[str, str]] = {}
        self.validation_enabled: set[str] = set()
        self._next: deque[C2bScript] = deque()
        self.payments: list[C2bPayment] = []

    def register(self, body: dict[str, Any]) -> dict[str, str]:
        shortcode, response_type = str(body.get("ShortCode") or ""), body.get("ResponseType")
        urls = {name: body.get(name) for name in ("ConfirmationURL", "ValidationURL")}
        if not shortcode.isdigit() or response_type not in RESPONSE_TYPES or not all(
                isinstance(url, str) and url.startswith(("http://", "https://")) for url in urls.values()):
            raise ValueError("ShortCode, ResponseType (Completed|Cancelled), ConfirmationURL and ValidationURL needed")
        if any(word in url.lower() for url in urls.values() for word in ("mpesa", "m-pesa", "safaricom")):
            raise ValueError("URLs must not contain M-Pesa, Safaricom or similar keywords")
        with self._lock:
            self.registrations[shortcode] = {"ResponseType": response_type, **urls}
        return {"OriginatorCoversationID": secrets.token_hex(8), "ResponseCode": "0",
                "ResponseDescription": "Success"}

    def enable_validation(self, shortcode: str, enabled: bool = True) -> None:
        with self._lock:
            (self.validation_enabled.add if enabled else self.validation_enabled.discard)(str(shortcode))

    def script(self, outcome: str, **opts: Any) -> None:
        if outcome not in C2B_OUTCOMES:
            raise ValueError(f"unknown C2B outcome {outcome!r}; expected one of {list(C2B_OUTCOMES)}")
        with self._lock:
            self._next.append(C2bScript(outcome=outcome, **opts))

    def simulate(self, body: dict[str, Any], used_receipts: set[str]) -> C2bPayment:
        shortcode = str(body.get("ShortCode") or "")
        command, msisdn = body.get("CommandID"), str(body.get("Msisdn") or "")
        amount = body.get("Amount")
        if command not in COMMANDS or not msisdn.isdigit():
            raise ValueError("CommandID (CustomerPayBillOnline|CustomerBuyGoodsOnline) and Msisdn needed")
        if isinstance(amount, bool) or not isinstance(amount, (int, float, str)):
            raise ValueError("Amount needed")
        with self._lock:
            if shortcode not in self.registrations:
                raise ValueError(f"no URLs registered for ShortCode {shortcode!r}")
            script = self._next.popleft() if self._next else C2bScript()
            trans_id = _receipt(used_receipts | {p.trans_id for p in self.payments})
            payment = C2bPayment(trans_id=trans_id, shortcode=shortcode, amount=str(amount),
                                 account=str(body.get("BillRefNumber") or ""), msisdn=msisdn, script=script,
                                 command=command)
            self.payments.append(payment)
        return payment

    def body_for(self, payment: C2bPayment, now: datetime) -> dict[str, Any]:
        msisdn = payment.msisdn if payment.script.msisdn_in_clear else hashlib.sha256(payment.msisdn.encode()).hexdigest()
        return {
            "TransactionType": COMMANDS[payment.command],
            "TransID": payment.trans_id, "TransTime": now.astimezone(NAIROBI).strftime("%Y%m%d%H%M%S"),
            "TransAmount": _two_decimals(payment.amount), "BusinessShortCode": payment.shortcode,
            "BillRefNumber": payment.account, "InvoiceNumber": "", "OrgAccountBalance": "",
            "ThirdPartyTransID": "", "MSISDN": msisdn, "FirstName": "JOHN", "MiddleName": "", "LastName": "D***",
        }


def _two_decimals(amount: str) -> str:
    try:
        return f"{float(amount):.2f}" if "." not in amount else amount
    except ValueError:
        return amount  # the sandbox passes on what it was given: the receiver must cope


def _receipt(used: set[str]) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    while True:
        receipt = "S" + "".join(secrets.choice(alphabet) for _ in range(9))
        if receipt not in used:
            return receipt


def _bad_request(exc: ValueError) -> JSONResponse:
    return JSONResponse({"requestId": secrets.token_hex(6), "errorCode": "400.002.02",
                         "errorMessage": f"Bad Request - {exc}"}, status_code=400)


def c2b_routes(sandbox: Any, json_body) -> list[Route]:
    """Routes over a DarajaSandbox (`sandbox.c2b` is its C2bState)."""

    async def register(request: Request) -> JSONResponse:
        try:
            sandbox.authorize("register", request.headers.get("authorization"))
            answer = sandbox.c2b.register(await json_body(request))
        except DarajaError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except ValueError as exc:
            return _bad_request(exc)
        return JSONResponse(answer)

    async def simulate(request: Request) -> JSONResponse:
        try:
            sandbox.authorize("simulate", request.headers.get("authorization"))
            payment = sandbox.c2b.simulate(await json_body(request), sandbox.used_receipts())
        except DarajaError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except ValueError as exc:
            return _bad_request(exc)
        task = asyncio.create_task(deliver(sandbox, payment))
        sandbox.track(task)
        return JSONResponse({"OriginatorCoversationID": secrets.token_hex(8), "ResponseCode": "0",
                             "ResponseDescription": "Accept the service request successfully."})

    async def pay(request: Request) -> JSONResponse:
        """Simulate C2B without a token, for a person at a terminal (`make demo` prints it)."""
        try:
            payment = sandbox.c2b.simulate(await json_body(request), sandbox.used_receipts())
        except (DarajaError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        task = asyncio.create_task(deliver(sandbox, payment))
        sandbox.track(task)
        return JSONResponse({"TransID": payment.trans_id, "ResponseCode": "0"})

    async def script(request: Request) -> JSONResponse:
        """{"outcome": normal|validation_timeout|duplicate_confirmation, "copies", "msisdn_in_clear"} or
        {"validation": true|false, "shortcode": "600000"}."""
        try:
            body = dict(await json_body(request))
            if "validation" in body:
                sandbox.c2b.enable_validation(str(body.get("shortcode") or sandbox.shortcode), bool(body["validation"]))
            else:
                sandbox.c2b.script(str(body.pop("outcome", "")), **body)
        except (DarajaError, TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    async def payments(request: Request) -> JSONResponse:
        return JSONResponse({"payments": [p.as_dict() for p in sandbox.c2b.payments],
                             "registrations": {k: {"ResponseType": v["ResponseType"]}
                                               for k, v in sandbox.c2b.registrations.items()}})

    return [
        Route("/mpesa/c2b/v1/registerurl", register, methods=["POST"]),
        Route("/mpesa/c2b/v2/registerurl", register, methods=["POST"]),
        Route("/mpesa/c2b/v1/simulate", simulate, methods=["POST"]),
        Route("/mpesa/c2b/v2/simulate", simulate, methods=["POST"]),
        Route("/sandbox/c2b", script, methods=["POST"]),
        Route("/sandbox/c2b/pay", pay, methods=["POST"]),
        Route("/sandbox/c2b/payments", payments, methods=["GET"]),
    ]


async def deliver(sandbox: Any, payment: C2bPayment) -> None:
    """Validation (when enabled), then the confirmation(s); never let a failure escape."""
    state: C2bState = sandbox.c2b
    try:
        registration = state.registrations[payment.shortcode]
        body = state.body_for(payment, sandbox.now())
        async with httpx.AsyncClient(timeout=POST_TIMEOUT_S) as client:
            if payment.shortcode in state.validation_enabled and not await _validated(client, registration, body, payment):
                return
            for _ in range(payment.script.copies if payment.script.outcome == "duplicate_confirmation" else 1):
                await _post(client, registration["ConfirmationURL"], body, payment.confirmations)
            payment.outcome = "confirmed"
    except asyncio.CancelledError:
        raise
    except Exception:  # a sandbox bug must not take the server down with it
        log.exception("daraja sandbox: delivering C2B %s failed", payment.trans_id)


async def _validated(client: httpx.AsyncClient, registration: dict[str, str], body: dict[str, Any],
                     payment: C2bPayment) -> bool:
    record: list[dict[str, Any]] = []
    answer = await _post(client, registration["ValidationURL"], body, record)
    payment.validation = record[0] if record else None
    if payment.script.outcome == "validation_timeout" or answer is None:
        go_on = registration["ResponseType"] == "Completed"
    else:
        go_on = str(answer.get("ResultCode")) == "0"
    if not go_on:
        payment.outcome = "rejected" if answer is not None and payment.script.outcome != "validation_timeout" else "cancelled"
    return go_on


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any], record: list) -> dict | None:
    try:
        response = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        record.append({"status": None, "error": type(exc).__name__})
        return None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    record.append({"status": response.status_code, "answer": answer})
    return answer if response.status_code == 200 and isinstance(answer, dict) else None


__all__ = ["C2bPayment", "C2bScript", "C2bState", "c2b_routes", "deliver"]
