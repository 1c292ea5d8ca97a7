"""Africa's Talking SMS through the official `africastalking` SDK (2.x), made async and typed.

SDK facts this adapter is built around (africastalking 2.0.3, `Service.py` / `SMS.py`):
- `SMSService` is synchronous (`requests.post`, a fresh connection per call), so it runs in a worker
  thread; it keeps no mutable state after construction, so one instance is shared by all threads.
- URLs are `self._baseUrl + path`, with `_baseUrl` fixed in `_init_service()` to
  `https://api.[sandbox.]africastalking.com/version1`. There is no public option, so `AT_API_BASE`
  is applied by overwriting `_baseUrl` (and `_contentUrl`, used by premium SMS) right after
  construction — one documented private attribute rather than a fork or a patched `requests`.
- A non-2xx answer raises `AfricasTalkingException(response.text)`: the HTTP status is lost, so
  errors are classified by the body text AT sends (401's "The supplied authentication is invalid").
- A 2xx answer is parsed only when Content-Type is exactly `application/json`; otherwise it is
  returned as text, which we decode ourselves.
- HTTP success says nothing about delivery: each recipient carries its own `statusCode`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import requests  # the SDK's transport; imported only to recognise its network errors
from africastalking.Service import AfricasTalkingException
from africastalking.SMS import SMSService
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from core.shared.errors import UpstreamError
from core.shared.phone import mask_phone

log = logging.getLogger(__name__)

_ACCEPTED = {100, 101, 102}  # Processed, Success, Queued
# statusCode: (name, transient, readable reason). Transient means "a later attempt may succeed";
# only 500/501 are worth retrying at once (see _RETRY_NOW). 405/407 are left to the caller's
# slower job backoff: an operator top-up or a routing fix takes minutes, not seconds.
_STATUSES: dict[int, tuple[str, bool, str]] = {
    401: ("RiskHold", False, "the SMS account is on risk hold"),
    402: ("InvalidSenderId", False, "the SMS sender id is not valid"),
    403: ("InvalidPhoneNumber", False, "the phone number is not valid"),
    404: ("UnsupportedNumberType", False, "the phone number cannot receive SMS"),
    405: ("InsufficientBalance", True, "the SMS account balance is too low"),
    406: ("UserInBlacklist", False, "the recipient has opted out of SMS"),
    407: ("CouldNotRoute", True, "the SMS could not be routed to the network"),
    500: ("InternalServerError", True, "the SMS service had an internal error"),
    501: ("GatewayError", True, "the SMS gateway failed"),
    502: ("RejectedByGateway", False, "the SMS was rejected by the network"),
}
_BY_NAME = {name: code for code, (name, _, _) in _STATUSES.items()}
_RETRY_NOW = {"sms_internal_server_error", "sms_gateway_error", "sms_timeout", "sms_network", "sms_http"}
_AUTH_INVALID = "supplied authentication is invalid"
# 4xx bodies AT sends for a request that will never succeed as written (bad field, bad sender…).
_PERMANENT_TEXT = re.compile(r"invalid|missing|not allowed|unauthori[sz]ed|forbidden", re.I)
_PHONE = re.compile(r"^\+?[1-9]\d{7,14}$")


@dataclass(frozen=True)
class SmsResult:
    message_id: str
    status: str  # AT's status name: Success, Processed or Queued
    cost: str  # as AT reports it, currency included: "KES 0.8000"


class SmsError(UpstreamError):
    """The SMS was not accepted. `transient` says whether a later attempt may succeed."""

    code = "sms_failed"

    def __init__(
        self, message: str, *, code: str | None = None, transient: bool = False,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, code=code, transient=transient)
        self.status_code = status_code  # AT's per-recipient statusCode when there was one


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _status_error(status_code: int, name: str) -> SmsError:
    known = _STATUSES.get(status_code)
    if known is None:
        # An unlisted 5xx is the service's fault; anything else we cannot reason about needs a person.
        transient = status_code >= 500
        return SmsError(f"SMS not sent: {name or status_code}", code="sms_rejected",
                        transient=transient, status_code=status_code)
    label, transient, reason = known
    return SmsError(f"SMS not sent: {reason}", code=f"sms_{_snake(label)}",
                    transient=transient, status_code=status_code)


def _http_error(body: str) -> SmsError:
    if _AUTH_INVALID in body.lower():
        return SmsError("SMS not sent: the Africa's Talking username or API key is wrong",
                        code="sms_auth", transient=False)
    if _PERMANENT_TEXT.search(body):
        return SmsError(f"SMS not sent: Africa's Talking refused the request ({body[:120]})",
                        code="sms_bad_request", transient=False)
    # Proxies, 5xx pages and empty bodies: the service is having a bad moment.
    return SmsError("SMS not sent: the SMS service answered with an error", code="sms_http", transient=True)


def _decode(answer: Any) -> dict:
    if isinstance(answer, dict):
        return answer
    try:  # the SDK returns text when Content-Type carries a charset
        data = json.loads(answer)
    except (TypeError, ValueError):
        data = None
    if not isinstance(data, dict):
        # A 2xx we cannot read may still have sent the SMS: do not retry at once (double SMS),
        # but let the caller's job try again later.
        raise SmsError("SMS service gave an unreadable answer", code="sms_bad_answer", transient=True) from None
    return data


def _parse(answer: Any, number: str) -> SmsResult:
    data = _decode(answer).get("SMSMessageData") or {}
    recipients = data.get("Recipients") or []
    mine = [r for r in recipients if r.get("number") == number] or recipients[:1]
    if not mine:
        # The whole request was refused, e.g. {"Message": "InvalidSenderId", "Recipients": []}.
        name = str(data.get("Message") or "")
        raise _status_error(_BY_NAME.get(name, 0), name)
    entry = mine[0]
    try:
        status_code = int(entry.get("statusCode"))
    except (TypeError, ValueError):
        raise SmsError("SMS service gave an unreadable answer", code="sms_bad_answer", transient=True) from None
    status = str(entry.get("status") or "")
    if status_code not in _ACCEPTED:
        raise _status_error(status_code, status)
    return SmsResult(str(entry.get("messageId") or ""), status, str(entry.get("cost") or ""))


def _retry_now(exc: BaseException) -> bool:
    return isinstance(exc, SmsError) and exc.code in _RETRY_NOW


def _to_at_number(phone: str) -> str:
    """Our phones are E.164 without `+` (2547XXXXXXXX); AT wants `+2547XXXXXXXX`."""
    phone = phone.strip()
    if not _PHONE.match(phone):
        raise SmsError("SMS not sent: the phone number is not valid",
                       code="sms_invalid_phone_number", transient=False)
    return phone if phone.startswith("+") else "+" + phone


def _api_base(api_base: str) -> str:
    # AT_API_BASE is the host part ("https://api.africastalking.com", "http://127.0.0.1:8000/at");
    # tolerate a copied "/version1" so it is not doubled.
    base = api_base.rstrip("/")
    return base if base.endswith("/version1") else base + "/version1"


class AfricasTalkingSms:
    """Sends one SMS per call. Raises SmsError (an UpstreamError) when it was not accepted."""

    def __init__(
        self,
        username: str,
        api_key: str,
        *,
        sender_id: str | None = None,
        api_base: str | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_base_s: float = 1.0,
    ) -> None:
        self._service = SMSService(username, api_key)  # a private instance: no SDK globals
        if api_base:
            # The SDK has no base-URL option; see the module docstring for why this is safe.
            self._service._baseUrl = self._service._contentUrl = _api_base(api_base)
        self._sender_id = sender_id or None
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s

    def __repr__(self) -> str:  # never let the key reach a log through repr()
        return f"AfricasTalkingSms(base={self._service._baseUrl!r}, sender_id={self._sender_id!r})"

    async def send(self, phone: str, message: str) -> SmsResult:
        number = _to_at_number(phone)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_retries + 1),
            wait=wait_exponential(multiplier=self._backoff_base_s, max=self._backoff_base_s * 16)
            + wait_random(0, self._backoff_base_s / 2),  # jitter: many workers, one upstream
            retry=retry_if_exception(_retry_now),
            before_sleep=lambda state: log.warning(
                "sms to %s failed (attempt %d): %s; retrying", mask_phone(phone),
                state.attempt_number, state.outcome.exception() if state.outcome else None,
            ),
            reraise=True,
        )
        try:
            result = await retrying(self._send_once, number, message)
        except SmsError as exc:
            log.warning("sms to %s not sent: %s (code=%s transient=%s)",
                        mask_phone(phone), exc.message, exc.code, exc.transient)
            raise
        log.info("sms to %s accepted: id=%s status=%s cost=%s",
                 mask_phone(phone), result.message_id, result.status, result.cost)
        return result

    async def _send_once(self, number: str, message: str) -> SmsResult:
        try:
            answer = await asyncio.wait_for(
                asyncio.to_thread(self._call_sdk, number, message), self._timeout_s
            )
        except TimeoutError:
            # The thread keeps running until requests' own timeout; AT may still send this one,
            # so a retry can deliver the receipt twice. For a receipt that beats never.
            raise SmsError("SMS not sent: the SMS service did not answer in time",
                           code="sms_timeout", transient=True) from None
        except requests.RequestException as exc:
            raise SmsError("SMS not sent: could not reach the SMS service",
                           code="sms_network", transient=True) from exc
        except AfricasTalkingException as exc:
            raise _http_error(str(exc)) from None
        except ValueError:  # the SDK's own phone check; ours is stricter, so this is a safety net
            raise SmsError("SMS not sent: the phone number is not valid",
                           code="sms_invalid_phone_number", transient=False) from None
        return _parse(answer, number)

    def _call_sdk(self, number: str, message: str) -> Any:
        # requests' (connect, read) timeouts bound the thread's life after wait_for gives up.
        timeout = (min(3.05, self._timeout_s), self._timeout_s)
        return self._service.send(message, [number], sender_id=self._sender_id, timeout=timeout)


async def account_balance(username: str, api_key: str, *, api_base: str | None = None,
                          timeout_s: float = 10.0) -> str:
    """The account's balance as AT reports it ("KES 1785.50"), through the SDK's GET /version1/user.
    Raises SmsError: not transient when the username or API key is wrong."""
    from africastalking.Application import ApplicationService

    service = ApplicationService(username, api_key)
    if api_base:
        service._baseUrl = _api_base(api_base)  # as for SMSService, see the module docstring
    try:
        answer = await asyncio.wait_for(asyncio.to_thread(
            service.fetch_application_data, timeout=(min(3.05, timeout_s), timeout_s)), timeout_s + 1)
    except TimeoutError:
        raise SmsError("Africa's Talking did not answer in time", code="sms_timeout", transient=True) from None
    except requests.RequestException as exc:
        raise SmsError("could not reach Africa's Talking", code="sms_network", transient=True) from exc
    except AfricasTalkingException as exc:
        raise _http_error(str(exc)) from None
    balance = (_decode(answer).get("UserData") or {}).get("balance")
    if not isinstance(balance, str):
        raise SmsError("Africa's Talking gave an unreadable account answer", code="sms_bad_answer", transient=True)
    return balance
