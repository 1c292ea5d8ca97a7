"""A local Tuya cloud: tokens, request signatures, device specifications/status/commands, faults.

On the wire it answers like Tuya's OpenAPI: HTTP 200 with {"success", "t", "tid", "result"} or
{"success": false, "code", "msg"}. Signatures follow Tuya's current scheme, which
tuya-connector-python 0.1.2 implements without a nonce and without signed headers:
    sign = HMAC-SHA256(client_id [+ access_token] + t + nonce + stringToSign, secret), upper hex
    stringToSign = METHOD \n SHA256(body) \n <"name:value\n" per Signature-Headers> \n path[?k=v&… sorted]
Token APIs (/v1.0/token…) are signed without the access token. Control routes under /sandbox/ are
for the demo and tests only and need no signature. The cloud's device status is a cache of what
each DP last reported (a slow meter's DPs report late and separately, `late_report`); the shadow
properties API shows each DP's report time. Project faults play a missing cloud subscription or
a used-up quota (28841xxx), a skewed clock (1013) and a token dying mid-use (1010).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.tuya_meters import CommandError, MeterFleet, SandboxMeter

REFRESH_TTL_S = 30 * 24 * 3600
_THROTTLE_MESSAGES = {1110: "concurrent request over limit", 1111: "system is busy, please retry later",
                      1199: "your requests are too frequent"}
# What the real cloud answers (HTTP 200, success false) when the project's cloud services are not
# set up: no IoT Core subscription, an expired trial, a used-up quota.
ERROR_MESSAGES = {
    1010: "token invalid", 1013: "request time is invalid", 1106: "permission deny",
    28841001: "No permissions.",
    28841002: "No permissions. Your subscription to cloud development plan has expired.",
    28841004: "No permissions. Your quota of Trial Edition is used up.",
    28841101: "No permissions. This API is not subscribed.",
    28841105: "No permissions. This project is not authorized to call this API.",
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def ok(result: Any) -> JSONResponse:
    return JSONResponse({"result": result, "success": True, "t": _now_ms(), "tid": uuid.uuid4().hex})


def error(code: int, msg: str, status_code: int = 200) -> JSONResponse:
    body = {"code": code, "msg": msg, "success": False, "t": _now_ms(), "tid": uuid.uuid4().hex}
    return JSONResponse(body, status_code=status_code)


class TuyaError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code} {msg}")
        self.code, self.msg = code, msg


@dataclass
class _Token:
    access: str
    refresh: str
    expires_at: float
    refresh_expires_at: float
    refresh_used: bool = False
    revoked: bool = False


def string_to_sign(method: str, path: str, query: list[tuple[str, str]], body: bytes,
                   headers: dict[str, str]) -> str:
    names = [n for n in headers.get("signature-headers", "").split(":") if n]
    signed_headers = "".join(f"{n}:{headers.get(n.lower(), '')}\n" for n in names)
    url = path + ("?" + "&".join(f"{k}={v}" for k, v in sorted(query)) if query else "")
    return f"{method.upper()}\n{hashlib.sha256(body).hexdigest()}\n{signed_headers}\n{url}"


def compute_sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest().upper()


class TuyaSandbox(MeterFleet):
    """All sandbox state (meters, faults and credits from MeterFleet; tokens and signatures here).
    The Starlette app keeps it on `app.state.tuya`."""

    def __init__(self, *, access_id: str, access_secret: str, token_ttl_s: int = 7200,
                 time_window_s: float = 600.0) -> None:
        super().__init__()
        self.access_id, self._secret = access_id, access_secret
        self.token_ttl_s, self.time_window_s = token_ttl_s, time_window_s
        self.requests: list[tuple[str, str]] = []  # (method, path) of every signed request
        self.project_error: tuple[int, str] | None = None  # every API call but the token's answers it
        self.clock_offset_s = 0.0  # how far the sandbox's clock is from the caller's (1013 beyond the window)
        self._tokens: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}

    # --- tokens ---
    def issue_token(self) -> dict[str, Any]:
        now = time.time()
        token = _Token(secrets.token_hex(16), secrets.token_hex(16), now + self.token_ttl_s, now + REFRESH_TTL_S)
        self._tokens[token.access], self._refresh[token.refresh] = token, token
        return {"access_token": token.access, "refresh_token": token.refresh,
                "expire_time": self.token_ttl_s, "uid": "sandbox-uid-0001"}

    def refresh_token(self, refresh: str) -> dict[str, Any]:
        token = self._refresh.get(refresh)
        if token is None or token.refresh_used or token.refresh_expires_at < time.time():
            raise TuyaError(1012, "token status is invalid")
        token.refresh_used = token.revoked = True  # single use; the old access token dies with it
        return self.issue_token()

    def expire_tokens(self) -> None:
        """Expire every access token now (refresh tokens stay usable), as time passing would."""
        for token in self._tokens.values():
            token.expires_at = 0.0

    def _check_token(self, access: str) -> None:
        token = self._tokens.get(access)
        if access and token is None:
            raise TuyaError(1011, "token invalid")  # never issued
        if token is None or token.revoked or token.expires_at <= time.time():
            raise TuyaError(1010, "token invalid")  # empty, expired or replaced by a refresh

    # --- signatures ---
    def authenticate(self, request: Request, body: bytes, *, token_api: bool) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        client_id, sign, t = headers.get("client_id", ""), headers.get("sign", ""), headers.get("t", "")
        if not client_id or client_id != self.access_id:
            raise TuyaError(1005, "clientId invalid")
        if not sign or not t:
            raise TuyaError(1105, "missing the header")
        if not t.isdigit() or abs(int(t) / 1000 - time.time() - self.clock_offset_s) > self.time_window_s:
            raise TuyaError(1013, "request time is invalid")
        access = "" if token_api else headers.get("access_token", "")
        sts = string_to_sign(request.method, _route_path(request), list(request.query_params.multi_items()),
                             body, headers)
        expected = compute_sign(self._secret, client_id + access + t + headers.get("nonce", "") + sts)
        if headers.get("sign_method", "HMAC-SHA256") != "HMAC-SHA256" or not hmac.compare_digest(sign, expected):
            raise TuyaError(1004, "sign invalid")
        self.requests.append((request.method, _route_path(request)))
        if not token_api:
            self._check_token(access)
            if self.project_error is not None:
                raise TuyaError(*self.project_error)

    def set_project_fault(self, kind: str, **opts: Any) -> None:
        """error: every API call answers `code` (a token is still issued); clock_skew: the sandbox's
        clock runs `seconds` ahead; expire_tokens: access tokens die now (1010 next); clear."""
        if kind == "error":
            code = int(opts.get("code", 28841002))
            self.project_error = (code, str(opts.get("msg") or ERROR_MESSAGES.get(code, "No permissions.")))
        elif kind == "clock_skew":
            self.clock_offset_s = float(opts.get("seconds", 900))
        elif kind == "expire_tokens":
            self.expire_tokens()
        elif kind == "clear":
            self.project_error, self.clock_offset_s = None, 0.0
        else:
            raise ValueError(f"unknown project fault {kind!r}")


def _route_path(request: Request) -> str:
    # The path the client signed: relative to where the sandbox is mounted.
    path, root = request.scope["path"], request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class _DropConnection(Response):
    """Start an answer and abort it: the client sees the connection break mid-response."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")]})
        await send({"type": "http.response.body", "body": b'{"result":', "more_body": True})
        # Returning with the body incomplete makes uvicorn close the connection.


# --- routes ------------------------------------------------------------------------------------------

def _sandbox(request: Request) -> TuyaSandbox:
    return request.app.state.tuya


async def token(request: Request) -> Response:
    sandbox = _sandbox(request)
    try:
        sandbox.authenticate(request, await request.body(), token_api=True)
        if request.query_params.get("grant_type") != "1":
            raise TuyaError(1003, "grant type invalid")
        return ok(sandbox.issue_token())
    except TuyaError as exc:
        return error(exc.code, exc.msg)


async def refresh(request: Request) -> Response:
    sandbox = _sandbox(request)
    try:
        sandbox.authenticate(request, await request.body(), token_api=True)
        return ok(sandbox.refresh_token(request.path_params["refresh_token"]))
    except TuyaError as exc:
        return error(exc.code, exc.msg)


async def _device_request(request: Request) -> tuple[SandboxMeter, bytes] | Response:
    """Authenticate, find the device, and play the request-level faults (slow, 5xx, throttle)."""
    sandbox, body = _sandbox(request), await request.body()
    try:
        sandbox.authenticate(request, body, token_api=False)
    except TuyaError as exc:
        return error(exc.code, exc.msg)
    meter = sandbox.devices.get(request.path_params["device_id"])
    if meter is None:
        return error(1106, "permission deny")  # Tuya's answer for a device outside the project
    meter.tick()
    if slow := meter.take_fault("slow"):
        await asyncio.sleep(slow.seconds)
    if meter.take_fault("server_error"):
        return error(500, "system error, please contact the admin", status_code=500)
    if throttle := meter.take_fault("throttle"):
        return error(throttle.code, _THROTTLE_MESSAGES.get(throttle.code, "system is busy, please retry later"))
    if scripted := meter.take_fault("error"):
        return error(scripted.code, scripted.msg or ERROR_MESSAGES.get(scripted.code, "error"))
    return meter, body


async def device_info(request: Request) -> Response:
    found = await _device_request(request)
    return found if isinstance(found, Response) else ok(found[0].info())


async def specifications(request: Request) -> Response:
    found = await _device_request(request)
    return found if isinstance(found, Response) else ok(found[0].specifications())


async def status(request: Request) -> Response:
    # An offline device still answers with its last reported values, as Tuya's cloud does.
    found = await _device_request(request)
    return found if isinstance(found, Response) else ok(found[0].status())


async def shadow_properties(request: Request) -> Response:
    # Each DP with the time the device last reported it: what tells a fresh value from a cached one.
    found = await _device_request(request)
    if isinstance(found, Response):
        return found
    codes = [c for c in request.query_params.get("codes", "").split(",") if c]
    return ok({"properties": found[0].shadow_properties(codes)})


def _parse_commands(body: bytes) -> list[dict[str, Any]]:
    try:
        commands = json.loads(body or b"null")["commands"]
    except (ValueError, TypeError, KeyError) as exc:
        raise TuyaError(1109, "param is illegal, please check it") from exc
    if not isinstance(commands, list) or not commands or not all(
            isinstance(c, dict) and "code" in c and "value" in c for c in commands):
        raise TuyaError(1109, "param is illegal, please check it")
    return commands


async def commands(request: Request) -> Response:
    found = await _device_request(request)
    if isinstance(found, Response):
        return found
    meter, body = found
    if not meter.online:
        return error(2001, "device is offline")
    try:
        checked = meter.validate(_parse_commands(body))
    except (TuyaError, CommandError) as exc:
        return error(exc.code, exc.msg)
    if meter.take_fault("accept_not_apply"):
        return ok(True)  # the cloud accepted it; the device never acts on it
    lose = meter.take_fault("apply_lose_answer")
    for code, value in checked:
        if (record := meter.apply(code, value)) is not None:
            _sandbox(request).record_credit(meter, record)
    if lose and lose.mode == "drop":
        return _DropConnection()
    if lose:
        await asyncio.sleep(lose.seconds)
    return ok(True)


async def not_found(request: Request) -> Response:
    return error(1108, "uri path invalid")


# --- control routes (demo and tests) -----------------------------------------------------------------

async def _json(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {}


async def list_devices(request: Request) -> Response:
    sandbox = _sandbox(request)
    return JSONResponse({"devices": [sandbox.describe(m) for m in sandbox.devices.values()]})


async def add_device(request: Request) -> Response:
    data, sandbox = await _json(request), _sandbox(request)
    if not data.get("device_id"):
        return JSONResponse({"error": "device_id is required"}, status_code=400)
    try:
        meter = sandbox.add_device(str(data["device_id"]), str(data.get("profile", "seed")),
                                   online=bool(data.get("online", True)), balance=data.get("balance", 0),
                                   price=data.get("price", "25"), name=data.get("name"),
                                   rate_kw=data.get("rate_kw", 0))
    except (ValueError, ArithmeticError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(sandbox.describe(meter), status_code=201)


async def set_fault(request: Request) -> Response:
    data, sandbox = await _json(request), _sandbox(request)
    device_id, kind = request.path_params["device_id"], str(data.pop("kind", ""))
    try:
        sandbox.clear_faults(device_id) if kind == "clear" else sandbox.set_fault(device_id, kind, **data)
    except KeyError:
        return JSONResponse({"error": "unknown device"}, status_code=404)
    except (ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(sandbox.describe(sandbox.devices[device_id]))


async def project_fault(request: Request) -> Response:
    data, sandbox = await _json(request), _sandbox(request)
    try:
        sandbox.set_project_fault(str(data.pop("kind", "")), **data)
    except (ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"project_error": sandbox.project_error, "clock_offset_s": sandbox.clock_offset_s})


async def consume(request: Request) -> Response:
    data, sandbox = await _json(request), _sandbox(request)
    try:
        used = sandbox.consume(request.path_params["device_id"], data.get("kwh", "0"))
    except KeyError:
        return JSONResponse({"error": "unknown device"}, status_code=404)
    except ArithmeticError:
        return JSONResponse({"error": "kwh must be a number"}, status_code=400)
    return JSONResponse({"consumed_kwh": str(used)})


def create_tuya_sandbox(*, access_id: str, access_secret: str, token_ttl_s: int = 7200,
                        time_window_s: float = 600.0) -> Starlette:
    device_routes = []
    for prefix in ("/v1.0/devices/{device_id}", "/v1.0/iot-03/devices/{device_id}"):
        spec_path = "/specifications" if prefix.startswith("/v1.0/devices") else "/specification"
        device_routes += [Route(prefix, device_info), Route(prefix + spec_path, specifications),
                          Route(prefix + "/status", status), Route(prefix + "/commands", commands, methods=["POST"])]
    device_routes.append(Route("/v2.0/cloud/thing/{device_id}/shadow/properties", shadow_properties))
    app = Starlette(routes=[
        Route("/v1.0/token", token), Route("/v1.0/token/{refresh_token}", refresh), *device_routes,
        Route("/sandbox/project/fault", project_fault, methods=["POST"]),
        Route("/sandbox/devices", list_devices), Route("/sandbox/devices", add_device, methods=["POST"]),
        Route("/sandbox/devices/{device_id}/fault", set_fault, methods=["POST"]),
        Route("/sandbox/devices/{device_id}/consume", consume, methods=["POST"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
    ])
    app.state.tuya = TuyaSandbox(access_id=access_id, access_secret=access_secret,
                                 token_ttl_s=token_ttl_s, time_window_s=time_window_s)
    return app
