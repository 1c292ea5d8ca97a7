"""State of the Daraja sandbox: tokens, scripted outcomes and the transactions pushed.

Tests script it from their own thread while uvicorn serves it from another, so every public method
takes one lock and none of them awaits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.daraja_c2b import C2bState
from sandbox.daraja_rules import (
    OUTCOMES,
    PUSH_ERROR,
    RESULTS,
    SPIKE_ARREST_CODE,
    SPIKE_ARREST_MESSAGE,
    SUCCESS_RESULT,
    DarajaError,
    Fault,
    Script,
    Transaction,
    bad_request,
    callback_body,
    check_credentials,
    new_checkout_request_id,
    new_merchant_request_id,
    new_receipt,
    validate_push,
)

ACCEPTED = "Success. Request accepted for processing"
LOCKED = "Unable to lock subscriber, a transaction is already in process for the current subscriber"
__all__ = ["DarajaSandbox", "Fault", "Script", "Transaction"]


class DarajaSandbox:
    def __init__(
        self,
        *,
        consumer_key: str,
        consumer_secret: str,
        shortcode: str,
        passkey: str,
        callback_delay_s: float = 0.5,
        token_ttl_s: int = 3599,
        clock: Callable[[], datetime] | None = None,
        callback_retries: int = 2,
        callback_retry_delay_s: float = 0.2,
    ) -> None:
        self._key, self._secret = consumer_key, consumer_secret
        # Daraja posts a callback again when the answer is not 200 (a few times, then gives up).
        self.callback_retries, self.callback_retry_delay_s = callback_retries, callback_retry_delay_s
        self.shortcode, self._passkey = str(shortcode), passkey
        self.callback_delay_s, self.token_ttl_s = callback_delay_s, token_ttl_s
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.reset()

    def now(self) -> datetime:
        return self._clock()

    def reset(self) -> None:
        """Forget tokens, scripts, faults and transactions; stop callbacks not yet sent."""
        with self._lock:
            self._tokens: dict[str, float] = {}
            self.token_requests = self.push_requests = self.query_requests = 0
            self._phone_scripts: dict[str, Script | Fault] = {}
            self._next: deque[Script] = deque()
            self._push_faults: deque[Fault] = deque()
            self._query_faults: deque[Fault] = deque()
            self._slow_pushes: deque[float] = deque()
            self._txns: dict[str, Transaction] = {}
            self.c2b = C2bState()  # registered C2B URLs, scripts and simulated Paybill/Till payments
        self.cancel_callbacks()

    def cancel_callbacks(self) -> None:
        """Stop callbacks still waiting to be sent."""
        with self._lock:
            tasks, self._tasks = self._tasks, set()
        for task in tasks:
            # Called from the test's thread as often as from the loop running the task.
            task.get_loop().call_soon_threadsafe(task.cancel)

    # -- OAuth -------------------------------------------------------------------------------

    def issue_token(self, authorization: str | None, grant_type: str | None) -> dict[str, str]:
        with self._lock:
            self.token_requests += 1
            if grant_type != "client_credentials":
                raise DarajaError(400, "400.008.02", "Invalid grant type passed")
            if not self._basic_ok(authorization):
                raise DarajaError(400, "400.008.01", "Invalid Authentication passed")
            token = secrets.token_urlsafe(21)
            self._tokens[token] = time.monotonic() + self.token_ttl_s
            # Daraja sends expires_in as a string.
            return {"access_token": token, "expires_in": str(self.token_ttl_s)}

    def _basic_ok(self, authorization: str | None) -> bool:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, f"{self._key}:{self._secret}".encode())

    def authorize(self, api: str, authorization: str | None) -> None:
        """Count a call to `api` ("push" or "query") and check its bearer token."""
        with self._lock:
            if api == "push":
                self.push_requests += 1
            elif api == "query":
                self.query_requests += 1
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise DarajaError(404, "404.001.04", "Invalid Authentication Header")
        with self._lock:
            expiry = self._tokens.get(token.strip())
            if expiry is None or expiry <= time.monotonic():
                raise DarajaError(404, "404.001.03", "Invalid Access Token")

    @property
    def issued_tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    # -- scripting ---------------------------------------------------------------------------

    def script_phone(self, phone: str, outcome: str, **opts: Any) -> None:
        """Every push to `phone` ends this way until clear_scripts()."""
        with self._lock:
            self._phone_scripts[str(phone)] = _make(outcome, opts)

    def script_next(self, outcome: str, **opts: Any) -> None:
        """The next push (to a phone without its own script) ends this way; calls queue up."""
        made = _make(outcome, opts)
        with self._lock:
            if isinstance(made, Fault):
                self._push_faults.append(made)
            else:
                self._next.append(made)

    def clear_scripts(self) -> None:
        with self._lock:
            self._phone_scripts.clear()
            self._next.clear()
            self._push_faults.clear()
            self._query_faults.clear()
            self._slow_pushes.clear()

    def fail_next_pushes(
        self, n: int = 1, status: int = 500, error_code: str = "500.003.1001", message: str = "Internal Server Error"
    ) -> None:
        with self._lock:
            self._push_faults.extend(Fault(status, error_code, message) for _ in range(n))

    def fail_next_queries(
        self, n: int = 1, status: int = 500, error_code: str = "500.003.1001", message: str = "Internal Server Error"
    ) -> None:
        with self._lock:
            self._query_faults.extend(Fault(status, error_code, message) for _ in range(n))

    def spike_arrest_next(self, n: int = 1, api: str = "push") -> None:
        """The next `n` pushes (or queries) hit Apigee's spike arrest: HTTP 429 with its fault body."""
        faults = self._push_faults if api == "push" else self._query_faults
        with self._lock:
            faults.extend(Fault(429, SPIKE_ARREST_CODE, SPIKE_ARREST_MESSAGE) for _ in range(n))

    def slow_next_pushes(self, n: int, delay_s: float) -> None:
        """Process the next pushes normally but answer only after `delay_s` (a lost answer)."""
        with self._lock:
            self._slow_pushes.extend(delay_s for _ in range(n))

    # -- STK push and query ------------------------------------------------------------------

    def push(self, body: dict[str, Any]) -> tuple[Transaction, dict[str, str], float]:
        """Validate and record a push: (transaction, answer, seconds to hold the answer back)."""
        with self._lock:
            if self._push_faults:
                fault = self._push_faults.popleft()
                raise DarajaError(fault.status, fault.error_code, fault.message)
            now = self.now()
            check_credentials(body, self.shortcode, self._passkey, now)
            phone, amount = validate_push(body)
            if any(t.phone == phone and t.state == "pending" for t in self._txns.values()):
                raise DarajaError(500, "500.001.1001", LOCKED)
            script = self._script_for(phone)
            txn = self._record(body, phone, amount, script, now)
            answer = {
                "MerchantRequestID": txn.merchant_request_id,
                "CheckoutRequestID": txn.checkout_request_id,
                "ResponseCode": "0",
                "ResponseDescription": ACCEPTED,
                "CustomerMessage": ACCEPTED,
            }
            hold = self._slow_pushes.popleft() if self._slow_pushes else 0.0
            return txn, answer, hold

    def _script_for(self, phone: str) -> Script:
        scripted = self._phone_scripts.get(phone)
        if isinstance(scripted, Fault):
            raise DarajaError(scripted.status, scripted.error_code, scripted.message)
        if scripted is not None:
            return scripted
        return self._next.popleft() if self._next else Script()

    def _record(self, body: dict[str, Any], phone: str, amount: int, script: Script, now: datetime) -> Transaction:
        checkout_id = new_checkout_request_id(now, phone)
        while checkout_id in self._txns:  # same phone within the same millisecond
            checkout_id = checkout_id[:-9] + f"{secrets.randbelow(10**9):09d}"
        txn = Transaction(
            merchant_request_id=new_merchant_request_id(),
            checkout_request_id=checkout_id,
            phone=phone,
            amount=amount,
            account_reference=body["AccountReference"],
            description=body["TransactionDesc"],
            callback_url=body["CallBackURL"],
            transaction_type=body["TransactionType"],
            party_b=str(body["PartyB"]),
            script=script,
            created_at=now,
        )
        self._txns[checkout_id] = txn
        return txn

    def query(self, body: dict[str, Any]) -> dict[str, str]:
        with self._lock:
            if self._query_faults:
                fault = self._query_faults.popleft()
                raise DarajaError(fault.status, fault.error_code, fault.message)
            check_credentials(body, self.shortcode, self._passkey, self.now())
            txn = self._txns.get(str(body.get("CheckoutRequestID", "")))
            if txn is None:
                raise bad_request("CheckoutRequestID")
            if txn.state == "pending":
                # Daraja answers a query for an unfinished prompt with an error, not a status.
                raise DarajaError(500, "500.001.1001", "The transaction is being processed")
            return {
                "ResponseCode": "0",
                "ResponseDescription": "The service request has been accepted successsfully",
                "MerchantRequestID": txn.merchant_request_id,
                "CheckoutRequestID": txn.checkout_request_id,
                "ResultCode": str(txn.result_code),
                "ResultDesc": str(txn.result_desc),
            }

    # -- settling and callbacks --------------------------------------------------------------

    def callback_delay(self, txn: Transaction) -> float:
        return txn.script.delay_s if txn.script.delay_s is not None else self.callback_delay_s

    def settle(self, checkout_request_id: str) -> list[dict[str, Any]]:
        """The tenant answered the prompt: fix the result and return the callbacks to POST."""
        with self._lock:
            txn = self._txns.get(checkout_request_id)
            if txn is None or txn.state != "pending":
                return []
            txn.result_code, txn.result_desc = RESULTS[txn.script.outcome]
            txn.state, txn.settled_at = "settled", self.now()
            if txn.result_code == 0:
                txn.receipt = self._unique_receipt()
            body = callback_body(txn, txn.settled_at)
            copies = {"lost_callback": 0, "duplicate_callback": 3}.get(txn.script.outcome, 1)
            return [body] * copies

    def late_success(self, checkout_request_id: str) -> dict[str, Any] | None:
        """The success callback that follows a `late_success` failure (the query keeps saying 1037)."""
        with self._lock:
            txn = self._txns.get(checkout_request_id)
            if txn is None or txn.script.outcome != "late_success" or txn.receipt is not None:
                return None
            txn.receipt = self._unique_receipt()
            return callback_body(txn, self.now(), SUCCESS_RESULT)

    def retries_for(self, txn: Transaction) -> int:
        return txn.script.callback_retries if txn.script.callback_retries is not None else self.callback_retries

    def _unique_receipt(self) -> str:
        used = {t.receipt for t in self._txns.values()}
        receipt = new_receipt()
        while receipt in used:
            receipt = new_receipt()
        return receipt

    def used_receipts(self) -> set[str]:
        with self._lock:
            return {t.receipt for t in self._txns.values() if t.receipt}

    def record_callback(self, checkout_request_id: str, body: dict[str, Any], status: int | None, error: str | None) -> None:
        with self._lock:
            txn = self._txns.get(checkout_request_id)
            if txn is not None:
                txn.callbacks.append({"body": body, "status": status, "error": error})

    def track(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._tasks.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._tasks.discard(task)

    @property
    def pending_tasks(self) -> int:
        with self._lock:
            return len(self._tasks)

    @property
    def transactions(self) -> list[Transaction]:
        with self._lock:
            return list(self._txns.values())

    def transaction(self, checkout_request_id: str) -> Transaction | None:
        with self._lock:
            return self._txns.get(checkout_request_id)


def _make(outcome: str, opts: dict[str, Any]) -> Script | Fault:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")
    if outcome == PUSH_ERROR:
        return Fault(**opts)
    return Script(outcome=outcome, **opts)
