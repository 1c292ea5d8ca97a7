"""TuyaMeterGateway: core's MeterGateway port (device info, specifications, status, commands) over
tuya-connector-python's TuyaOpenAPI; what the DPs mean is core's business (core/meters/profiles.py).

The client (0.1.2) has no HTTP timeout, crashes with AttributeError on non-2xx answers, only
handles token error 1010 and is not thread-safe. So: its requests.Session is replaced by one with
a default timeout and a hook that raises on non-2xx; every call runs in a worker thread under one
lock, bounded by asyncio.wait_for; token errors reconnect and retry once; every failure becomes a
typed error from gateways.tuya_errors.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import requests
from tuya_connector import TuyaOpenAPI

from core.meters.profiles import DpSpec, parse_specifications
from core.ports import DpReport
from core.shared.errors import InvalidInput
from gateways.tuya_errors import (
    TOKEN_CODES,
    HttpStatusError,
    TuyaError,
    TuyaOutcomeUnknown,
    TuyaTransientError,
    error_from_exception,
    error_from_response,
)

log = logging.getLogger("lipameter.tuya")
_RENEW_MARGIN_MS = 60_000
_NEVER_MS = 2**62  # the client's view of every token's expiry: it must never use its refresh path
_DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # also keeps paths from being steered
_DP_CODE = re.compile(r"[A-Za-z0-9_]{1,64}")
_PRIVATE_FIELDS = {"local_key", "ip", "lat", "lon", "uid", "owner_id", "uuid"}  # never leave the gateway

class _Abandoned(Exception):
    """The async caller gave up before this request left; it must not be sent any more."""


class _SendGuard:
    """Decides, atomically, between "the command left" and "the caller gave up first"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = False
        self.cancelled = False

    def before_request(self, method: str) -> None:
        with self._lock:
            if self.cancelled:
                raise _Abandoned()
            self.sent = self.sent or method.upper() == "POST"

    def cancel(self) -> bool:
        with self._lock:
            self.cancelled = True
            return self.sent


def _raise_for_status(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if not response.ok:
        raise HttpStatusError(response.status_code)


class _TimeoutSession(requests.Session):
    """A Session with a default timeout that tells the current call's guard before each request.

    Its proxies are the environment's for `endpoint` (HTTP(S)_PROXY, NO_PROXY), read once, as the other
    gateways' transport reads them (gateways/aiohttp_transport.py): not requests' `trust_env`, which
    looks them and ~/.netrc up again on every request (~0.5 ms of CPU a call on the 2-core machine, a
    top-up makes three; a netrc entry for Tuya's host would only add a header its signature does not cover)."""

    def __init__(self, timeout_s: float, endpoint: str) -> None:
        super().__init__()
        self.trust_env = False
        self.proxies = requests.utils.get_environ_proxies(endpoint)
        self.timeout_s = timeout_s
        self.guard: _SendGuard | None = None
        self.hooks["response"].append(_raise_for_status)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self.guard is not None:
            self.guard.before_request(method)
        kwargs.setdefault("timeout", (self.timeout_s, self.timeout_s))
        return super().request(method, url, *args, **kwargs)


class TuyaMeterGateway:
    """Async access to Tuya meters. Errors: TuyaTransientError (incl. TuyaOutcomeUnknown) and
    TuyaPermanentError, both core.shared.errors.UpstreamError with `.tuya_code`."""

    def __init__(self, endpoint: str, access_id: str, access_secret: str, *, timeout_s: float = 10.0,
                 deadline_s: float | None = None, lang: str = "en") -> None:
        self._endpoint, self._access_id, self._secret, self._lang = endpoint.rstrip("/"), access_id, access_secret, lang
        self.timeout_s = timeout_s
        # Backstop over the per-request timeout: one call may connect, send, reconnect and retry.
        self.deadline_s = deadline_s if deadline_s is not None else 4 * timeout_s + 1
        self._lock = threading.Lock()
        self._api: TuyaOpenAPI | None = None
        self._session: _TimeoutSession | None = None
        # The client's own debug log prints refresh-token URLs: keep it above DEBUG.
        logging.getLogger("tuya iot").setLevel(max(logging.getLogger("tuya iot").level, logging.INFO))

    def __repr__(self) -> str:
        return f"TuyaMeterGateway({self._endpoint!r}, access_id={self._access_id!r})"

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
            self._api = self._session = None

    # --- the one way out ---------------------------------------------------------------------------
    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                    params: dict[str, Any] | None = None, envelope: bool = False) -> Any:
        """Tuya's `result`, or with `envelope` the whole answer ({"result", "t", ...})."""
        guard = _SendGuard()
        started = time.monotonic()
        work = functools.partial(self._locked_exchange, method, path, body, guard, params, envelope)
        try:
            result = await asyncio.wait_for(asyncio.to_thread(work), self.deadline_s)
        except asyncio.CancelledError:
            guard.cancel()  # a cancelled caller's command must not leave later from the thread
            raise
        except TimeoutError:
            sent = guard.cancel()
            text = "the Tuya cloud did not answer in time"
            error: TuyaError = (TuyaOutcomeUnknown(text + " (the command may have been applied)") if sent
                                else TuyaTransientError(text))
            self._log_failure(method, path, started, error)
            raise error from None
        except TuyaError as exc:
            self._log_failure(method, path, started, exc)
            raise
        log.debug("tuya %s %s ok in %.0f ms", method, path, (time.monotonic() - started) * 1000)
        return result

    @staticmethod
    def _log_failure(method: str, path: str, started: float, exc: TuyaError) -> None:
        log.warning("tuya %s %s failed after %.0f ms: %s (%s)", method, path,
                    (time.monotonic() - started) * 1000, exc.message, type(exc).__name__)

    def _locked_exchange(self, method: str, path: str, body: dict[str, Any] | None, guard: _SendGuard,
                         params: dict[str, Any] | None = None, envelope: bool = False) -> Any:
        if not self._lock.acquire(timeout=self.deadline_s):
            raise TuyaTransientError("the Tuya client is busy")
        try:
            api = self._client()
            assert self._session is not None
            self._session.guard = guard
            try:
                return self._exchange(api, method, path, body, guard, params, envelope)
            except (HttpStatusError, requests.RequestException) as exc:
                raise error_from_exception(exc, command_sent=guard.sent) from exc
            finally:
                self._session.guard = None
        finally:
            self._lock.release()

    def _client(self) -> TuyaOpenAPI:
        if self._api is None:
            api = TuyaOpenAPI(self._endpoint, self._access_id, self._secret, lang=self._lang)
            api.session.close()
            api.session = self._session = _TimeoutSession(self.timeout_s, self._endpoint)
            self._api = api
        return self._api

    def _exchange(self, api: TuyaOpenAPI, method: str, path: str, body: dict[str, Any] | None,
                  guard: _SendGuard, params: dict[str, Any] | None = None, envelope: bool = False) -> Any:
        # Tuya answers refusals as HTTP 200 {"success": false, "code"}. A token that expired mid-use
        # (1010; the client then reconnects by itself) or is unknown is renewed and the call retried
        # once; everything else becomes a typed error (28841xxx and 1013 name what to fix).
        for attempt in (1, 2):
            if not api.is_connect() or _expiring(api):
                api.token_info = None
                self._connect(api)
            if method == "TOKEN":
                return True  # connect() only: `check_token`
            token_before = api.token_info.access_token
            response = api.post(path, body) if method == "POST" else api.get(path, params)
            _own_token_expiry(api)  # the client may have reconnected by itself on 1010
            if not isinstance(response, dict):
                raise error_from_response({"msg": "answered something that is not a Tuya response"},
                                          command_sent=guard.sent)
            if response.get("success"):
                return response if envelope else response.get("result")
            code = response.get("code")
            if code in TOKEN_CODES and attempt == 1:
                log.info("tuya token rejected (code %s); reconnecting once", code)
                if api.is_connect() and api.token_info.access_token == token_before:
                    api.token_info = None  # the client did not reconnect by itself (it only knows 1010)
                continue
            raise error_from_response(response, command_sent=guard.sent)
        raise AssertionError("unreachable")

    @staticmethod
    def _connect(api: TuyaOpenAPI) -> None:
        response = api.connect()
        if not response.get("success") or not api.is_connect():
            raise error_from_response(response)
        _own_token_expiry(api)
        log.info("tuya connected")

    async def check_token(self) -> None:
        """Obtain an access token now (typed errors as for any call): the first thing `doctor` asks."""
        await self._call("TOKEN", "/v1.0/token")

    # --- device API --------------------------------------------------------------------------------
    @staticmethod
    def _path(device_id: str, suffix: str = "") -> str:
        if not _DEVICE_ID.fullmatch(device_id or ""):
            raise InvalidInput(f"invalid Tuya device id {device_id!r}")
        return f"/v1.0/devices/{device_id}{suffix}"

    async def device_info(self, device_id: str) -> dict[str, Any]:
        """{id, name, online: bool, category, product_name, …} without keys or location."""
        result = await self._call("GET", self._path(device_id)) or {}
        info = {k: v for k, v in result.items() if k not in _PRIVATE_FIELDS}
        info["online"] = bool(result.get("online"))
        return info

    async def specifications(self, device_id: str) -> list[DpSpec]:
        result = await self._call("GET", self._path(device_id, "/specifications")) or {}
        return list(parse_specifications(result).values())

    async def status(self, device_id: str) -> dict[str, Any]:
        result = await self._call("GET", self._path(device_id, "/status")) or []
        return {item["code"]: item.get("value") for item in result if isinstance(item, dict) and "code" in item}

    async def reports(self, device_id: str, codes: list[str]) -> dict[str, DpReport]:
        """Each DP's last reported value and report time (Tuya's shadow properties API).

        Tuya stamps `time` with its own clock; the answer's `t` is the cloud's clock at answering, so
        `time - t` is how long ago the DP was reported, whatever this server's clock says."""
        if not codes or not all(_DP_CODE.fullmatch(c or "") for c in codes):
            raise InvalidInput("DP codes must be a non-empty list of names")
        path = f"/v2.0/cloud/thing/{self._path(device_id)[len('/v1.0/devices/'):]}/shadow/properties"
        answer = await self._call("GET", path, params={"codes": ",".join(codes)}, envelope=True)
        received = time.time()
        cloud_now_ms = answer.get("t") if isinstance(answer.get("t"), int) else int(received * 1000)
        properties = (answer.get("result") or {}).get("properties") or []
        found: dict[str, DpReport] = {}
        for item in properties:
            if not isinstance(item, dict) or item.get("code") not in codes or not isinstance(item.get("time"), int):
                continue
            age_s = max(0, cloud_now_ms - item["time"]) / 1000
            found[item["code"]] = DpReport(value=item.get("value"),
                                           reported_at=datetime.fromtimestamp(received - age_s, UTC))
        return found

    async def send_commands(self, device_id: str, commands: list[dict[str, Any]]) -> None:
        """POST commands. A lost answer raises TuyaOutcomeUnknown: verify before sending again."""
        if not commands or not all(isinstance(c, dict) and set(c) == {"code", "value"} for c in commands):
            raise InvalidInput("commands must be a non-empty list of {code, value}")
        result = await self._call("POST", self._path(device_id, "/commands"), {"commands": commands})
        if result is not True:
            raise TuyaOutcomeUnknown(f"Tuya accepted the commands but answered result={result!r}")
        log.info("tuya commands sent to %s: %s", device_id, ", ".join(c["code"] for c in commands))


def _own_token_expiry(api: TuyaOpenAPI) -> None:
    """Keep the token's real expiry ourselves and hide it from the client.

    The client refreshes with GET /v1.0/token/{refresh_token}: the refresh token travels in the URL
    path, where access logs (urllib3 at DEBUG, proxies) would show it. We take a fresh token with
    grant_type=1 instead, shortly before expiry (and on 1010/1011).
    """
    info = api.token_info
    if info is not None and info.expire_time != _NEVER_MS:
        info.lipameter_expires_ms = info.expire_time
        info.expire_time = _NEVER_MS


def _expiring(api: TuyaOpenAPI) -> bool:
    expires = getattr(api.token_info, "lipameter_expires_ms", api.token_info.expire_time)
    return expires - _RENEW_MARGIN_MS <= time.time() * 1000
