"""Daraja (M-Pesa Express) adapter behind core.ports.PaymentGateway: OAuth, STK push, STK query.

Every failure leaves as core.shared.errors.UpstreamError with a message a tenant can read and Daraja's
errorCode as `.code`. The consumer secret, passkey, Password and token never appear in an
exception or a log line, and phone numbers are masked in logs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from core.ports import StkPushAccepted, StkPushRequest, StkQueryResult
from core.shared.clock import NAIROBI
from core.shared.errors import InvalidInput, UpstreamError
from core.shared.money import read_decimal
from core.shared.phone import mask_checkout_id, mask_phone
from gateways.aiohttp_transport import AiohttpTransport, ApiClient
from gateways.daraja_errors import (
    BUSY_MESSAGE,
    UNCONFIRMED_MESSAGE,
    Answer,
    ConfigurationError,
    ConfigurationProblem,
    Refused,
    Retryable,
    check_answer,
    parse_answer,
    refusal_message,
)

log = logging.getLogger("lipameter.daraja")
TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
OAUTH_PATH = "/oauth/v1/generate"
PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
QUERY_PATH = "/mpesa/stkpushquery/v1/query"
REGISTER_URL_PATH = "/mpesa/c2b/v2/registerurl"  # Customer To Business Register URL, v2
RESPONSE_TYPES = ("Completed", "Cancelled")  # what M-Pesa does when our validation URL does not answer in time
INVALID_TOKEN = "404.001.03"
SANDBOX_HOST, PRODUCTION_HOST = "sandbox.safaricom.co.ke", "api.safaricom.co.ke"
SANDBOX_SHORTCODE = "174379"  # Safaricom's published Lipa na M-Pesa test shortcode
# SHA-256 of the sandbox's published test passkey (kept as a hash so no passkey-looking string is in code).
SANDBOX_PASSKEY_SHA256 = "6b933448d12f658cae3204515c314d7745b132307854ba107b16922825446b73"
# Idle pooled connections are dropped after this long: shorter than any server's keep-alive (Apigee,
# nginx and uvicorn use 5 s or more), so a push never goes out on a connection the server has just
# closed, which would come back as a ReadError: "outcome unknown" (issue 10).
KEEPALIVE_EXPIRY_S = 2.0


def daraja_http_client(timeout_s: float, *, keepalive_expiry_s: float = KEEPALIVE_EXPIRY_S) -> httpx.AsyncClient:
    """httpx's API sent through aiohttp (gateways/aiohttp_transport.py): no limit on connections, proxies
    from the environment (HTTPS_PROXY, NO_PROXY) as httpx's own client, no cookies."""
    transport = AiohttpTransport(ssl_context=httpx.create_ssl_context(), keepalive_expiry=keepalive_expiry_s)
    return ApiClient(timeout=httpx.Timeout(timeout_s), transport=transport)


def environment_warnings(base_url: str, shortcode: str, passkey: str) -> list[str]:
    """Live credentials against the sandbox host, or sandbox ones against production: every push fails."""
    host = httpx.URL(base_url).host if base_url else ""
    sandbox_passkey = hashlib.sha256(passkey.encode()).hexdigest() == SANDBOX_PASSKEY_SHA256
    if host == SANDBOX_HOST and shortcode and shortcode != SANDBOX_SHORTCODE and not sandbox_passkey:
        return [f"DARAJA_BASE_URL is Safaricom's sandbox ({SANDBOX_HOST}) but DARAJA_SHORTCODE {shortcode} is "
                f"not its test shortcode: live credentials only work against https://{PRODUCTION_HOST}"]
    if host == PRODUCTION_HOST and (shortcode == SANDBOX_SHORTCODE or sandbox_passkey):
        return [f"DARAJA_BASE_URL is Safaricom's production ({PRODUCTION_HOST}) but the shortcode or passkey is "
                f"the sandbox's test one: set your live credentials, or use https://{SANDBOX_HOST}"]
    return []

# A push that died while its answer was on the way may already be on the tenant's phone;
# sending it again would only hit Daraja's subscriber lock and lose the first CheckoutRequestID.
_AMBIGUOUS = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def _whole_amount(amount: Any) -> int:
    value = read_decimal(amount)
    if value is None or value != value.to_integral_value():
        raise InvalidInput("The amount must be a whole number of shillings.", code="invalid_amount")
    return int(value)


class DarajaGateway:
    def __init__(
        self,
        *,
        base_url: str,
        consumer_key: str,
        consumer_secret: str,
        shortcode: str,
        passkey: str,
        transaction_type: str = "CustomerPayBillOnline",
        party_b: str | None = None,
        callback_url: str,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        clock: Callable[[], datetime] | Any | None = None,
        keepalive_expiry_s: float = KEEPALIVE_EXPIRY_S,
    ) -> None:
        if transaction_type not in TRANSACTION_TYPES:
            raise ValueError(f"transaction_type must be one of {TRANSACTION_TYPES}")
        self._base = base_url.rstrip("/")
        self._auth = (consumer_key, consumer_secret)
        self._shortcode, self._passkey = str(shortcode), passkey
        self._type, self._party_b = transaction_type, str(party_b or shortcode)
        self._callback_url = callback_url
        self._timeout = httpx.Timeout(timeout_s)
        self._owns_client = client is None
        self._client = client or daraja_http_client(timeout_s, keepalive_expiry_s=keepalive_expiry_s)
        self._max_retries, self._backoff = max_retries, backoff_base_s
        # Accept either core.ports.Clock (has .now()) or a bare callable.
        self._now: Callable[[], datetime] = getattr(clock, "now", clock) or (lambda: datetime.now(UTC))
        self._token_lock = asyncio.Lock()
        self._token: str | None = None
        self._token_expiry = 0.0
        # The last refusal of our setup by Daraja (None once a call succeeds): for `doctor` and logs.
        self.configuration_problem: ConfigurationProblem | None = None

    def __repr__(self) -> str:
        return f"DarajaGateway(base_url={self._base!r}, shortcode={self._shortcode!r})"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- the port ----------------------------------------------------------------------------

    async def stk_push(self, request: StkPushRequest) -> StkPushAccepted:
        amount = _whole_amount(request.amount)

        def build() -> dict[str, Any]:
            timestamp, password = self._password()
            return {
                "BusinessShortCode": self._shortcode,
                "Password": password,
                "Timestamp": timestamp,
                "TransactionType": self._type,
                "Amount": amount,
                "PartyA": request.phone,
                "PartyB": self._party_b,
                "PhoneNumber": request.phone,
                "CallBackURL": self._callback_url,
                "AccountReference": request.account_reference,
                "TransactionDesc": request.description.strip()[:13] or "Payment",
            }

        answer = await self._call("push", PUSH_PATH, build)
        body = answer.body
        code = str(body.get("ResponseCode", ""))
        if code != "0":
            desc = str(body.get("ResponseDescription", ""))
            log.warning("daraja push refused for %s: ResponseCode %s %s", mask_phone(request.phone), code, desc)
            raise UpstreamError(refusal_message("push", code, desc), code=code or "bad_response")
        if not body.get("CheckoutRequestID") or not body.get("MerchantRequestID"):
            raise UpstreamError(UNCONFIRMED_MESSAGE, code="bad_response", transient=True)
        log.info("daraja push accepted: %s KES %s -> %s", mask_phone(request.phone), amount,
                 mask_checkout_id(str(body["CheckoutRequestID"])))
        return StkPushAccepted(
            merchant_request_id=str(body["MerchantRequestID"]),
            checkout_request_id=str(body["CheckoutRequestID"]),
            customer_message=str(body.get("CustomerMessage", "")),
        )

    async def stk_query(self, checkout_request_id: str) -> StkQueryResult:
        def build() -> dict[str, Any]:
            timestamp, password = self._password()
            return {
                "BusinessShortCode": self._shortcode,
                "Password": password,
                "Timestamp": timestamp,
                "CheckoutRequestID": checkout_request_id,
            }

        answer = await self._call("query", QUERY_PATH, build)
        if answer.processing or "ResultCode" not in answer.body:
            return StkQueryResult(processing=True)
        desc = answer.body.get("ResultDesc")
        return StkQueryResult(processing=False, result_code=str(answer.body["ResultCode"]), result_desc=desc)

    async def register_c2b_urls(self, *, shortcode: str, response_type: str, confirmation_url: str,
                                validation_url: str) -> dict[str, str]:
        """Register the C2B URLs of a Paybill or Till. Daraja's answer (OriginatorCoversationID,
        ResponseCode "0", ResponseDescription) on success; UpstreamError when refused."""
        if response_type not in RESPONSE_TYPES:
            raise InvalidInput(f"ResponseType must be {' or '.join(RESPONSE_TYPES)}", code="invalid_response_type")
        payload = {"ShortCode": str(shortcode), "ResponseType": response_type,
                   "ConfirmationURL": confirmation_url, "ValidationURL": validation_url}
        answer = await self._call("register", REGISTER_URL_PATH, lambda: payload)
        code = str(answer.body.get("ResponseCode", ""))
        if code not in ("0", "00000000"):
            desc = str(answer.body.get("ResponseDescription", ""))
            raise UpstreamError(f"M-Pesa refused the C2B URLs: {desc or code or 'no answer'}", code=code or "bad_response")
        return {key: str(value) for key, value in answer.body.items()}

    # -- plumbing ----------------------------------------------------------------------------

    def _password(self) -> tuple[str, str]:
        # Daraja checks the timestamp against Nairobi wall-clock time, whatever our zone is.
        timestamp = self._now().astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")
        raw = f"{self._shortcode}{self._passkey}{timestamp}".encode()
        return timestamp, base64.b64encode(raw).decode()

    async def _call(self, op: str, path: str, build: Callable[[], dict[str, Any]]) -> Answer:
        """One API call with retries; `build` runs per attempt so each carries a fresh Timestamp."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_retries + 1),
            wait=wait_exponential(multiplier=self._backoff, max=self._backoff * 32) + wait_random(0, self._backoff),
            retry=retry_if_exception(lambda exc: _worth_retrying(op, exc)),
            before_sleep=lambda state: _log_retry(op, state),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    answer = await self._attempt(path, build)
                    self.configuration_problem = None
                    return answer
        except ConfigurationError as exc:
            log.error("daraja %s refused: configuration error %s %s (check the shortcode, passkey, consumer "
                      "key and DARAJA_BASE_URL)", op, exc.code, exc.message)
            self.configuration_problem = ConfigurationProblem(exc.code, exc.message)
            raise UpstreamError(refusal_message(op, exc.code, exc.message), code=exc.code) from None
        except Refused as exc:
            log.warning("daraja %s refused: %s %s", op, exc.code, exc.message)
            raise UpstreamError(refusal_message(op, exc.code, exc.message), code=exc.code) from None
        except Retryable as exc:
            log.error("daraja %s gave up after %d attempts: %s %s", op, self._max_retries + 1, exc.code, exc.message)
            raise UpstreamError(BUSY_MESSAGE, code=exc.code, transient=True) from None
        except httpx.TransportError as exc:
            name = type(exc).__name__
            if op == "push" and isinstance(exc, _AMBIGUOUS):
                log.error("daraja push outcome unknown (%s); not resending", name)
                raise UpstreamError(UNCONFIRMED_MESSAGE, code="outcome_unknown", transient=True) from None
            log.error("daraja %s unreachable after %d attempts: %s", op, self._max_retries + 1, name)
            raise UpstreamError(BUSY_MESSAGE, code=name, transient=True) from None
        raise AssertionError("unreachable")  # AsyncRetrying either returns or raises

    async def _attempt(self, path: str, build: Callable[[], dict[str, Any]]) -> Answer:
        token = await self._access_token()
        answer = await self._post(path, build(), token)
        if answer.code == INVALID_TOKEN:
            # Daraja may drop a token before expires_in; fetch a new one and repeat this call once.
            log.info("daraja: access token refused; fetching a new one")
            await self._drop_token(token)
            answer = await self._post(path, build(), await self._access_token())
        check_answer(answer)
        return answer

    async def _post(self, path: str, payload: dict[str, Any], token: str) -> Answer:
        headers = {"Authorization": f"Bearer {token}"}
        response = await self._client.post(self._base + path, json=payload, headers=headers, timeout=self._timeout)
        return parse_answer(response)

    async def _access_token(self) -> str:
        async with self._token_lock:  # concurrent callers wait for one fetch
            if self._token and time.monotonic() < self._token_expiry:
                return self._token
            answer = await self._fetch_token()
            token = answer.body.get("access_token")
            if answer.status != 200 or not isinstance(token, str) or not token:
                log.error("daraja oauth refused: %s %s", answer.code, answer.message)
                if answer.status == 429 or answer.status >= 500:
                    check_answer(answer)  # raises: busy or down, worth another try
                # Any other refusal here means our consumer key or secret is wrong.
                raise ConfigurationError(answer.code, "Invalid Authentication")
            ttl = _seconds(answer.body.get("expires_in"))
            # Renew a little early so a token never expires between our check and Daraja's.
            self._token, self._token_expiry = token, time.monotonic() + ttl - min(60.0, ttl / 10)
            return token

    async def _fetch_token(self) -> Answer:
        url = self._base + OAUTH_PATH
        try:
            response = await self._client.get(
                url, params={"grant_type": "client_credentials"}, auth=self._auth, timeout=self._timeout
            )
        except httpx.TransportError as exc:
            # Asking for a token twice is harmless, so any network failure here may be retried.
            raise Retryable(type(exc).__name__, "OAuth request failed") from None
        return parse_answer(response)

    async def _drop_token(self, token: str) -> None:
        async with self._token_lock:
            if self._token == token:  # another caller may have renewed it already
                self._token = None


def _seconds(expires_in: Any) -> float:
    # Daraja sends expires_in as a string ("3599").
    try:
        return max(float(str(expires_in)), 0.0)
    except ValueError:
        return 3599.0


def _worth_retrying(op: str, exc: BaseException) -> bool:
    if isinstance(exc, Refused):
        return False
    if isinstance(exc, Retryable):
        return True
    if isinstance(exc, httpx.TransportError):
        return not (op == "push" and isinstance(exc, _AMBIGUOUS))
    return False


def _log_retry(op: str, state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    code = exc.code if isinstance(exc, Retryable) else type(exc).__name__
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("daraja %s attempt %d failed (%s); retrying in %.2fs", op, state.attempt_number, code, wait)
