"""HTTP plumbing shared by the routes: JSON errors, capped bodies, API keys, client addresses."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from core.shared.errors import Conflict, DomainError, InvalidInput, NotFound, UpstreamError
from core.shared.inbound import MAX_JSON_DEPTH, TooLarge, has_nul, json_depth, read_capped

log = logging.getLogger("lipameter.http")

class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def error_response(status: int, message: str, code: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"success": False, "message": message, "code": code, **extra}, status_code=status)


def domain_status(error: DomainError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, UpstreamError):
        return 502
    if isinstance(error, InvalidInput):
        return 422
    return 400


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes whatever Content-Length claims."""
    try:
        return await read_capped(request.stream(), limit, declared=request.headers.get("content-length"))
    except TooLarge as error:
        raise HttpError(413, str(error), "body_too_large") from None


# No body we take is deeper than ~10 levels (Daraja's callback is 6); deeper is an attack on the parser,
# whose recursion (and every later json.dumps of the stored body) would end in a RecursionError.
def check_json_depth(raw: bytes | str) -> None:
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise HttpError(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels", "json_too_deep")


async def read_json_object(request: Request, limit: int) -> dict:
    body = await read_body(request, limit)
    if has_nul(body):
        raise HttpError(400, "request body must not contain NUL characters", "invalid_json")
    check_json_depth(body)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "request body must be JSON", "invalid_json") from None
    if not isinstance(document, dict):
        raise HttpError(400, "request body must be a JSON object", "invalid_json")
    return document


def require_api_key(request: Request, keys: list[str]) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HttpError(401, "missing API key: send Authorization: Bearer <key>", "unauthorized")
    presented = token.strip().encode()
    # Compare against every key so the time taken does not tell which prefix matched.
    matched = [hmac.compare_digest(presented, key.encode()) for key in keys]
    if not any(matched):
        raise HttpError(401, "invalid API key", "unauthorized")


def client_address(request: Request, trusted_proxies: list[str]) -> str | None:
    """The peer address; X-Forwarded-For is believed only when the peer is a trusted proxy."""
    peer = request.client.host if request.client else None
    if peer and _in_networks(peer, trusted_proxies):
        # Every header line, in order: a proxy may append its own line after the client's, and the
        # client writes whatever it likes into the lines on the left.
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        # Walk from the nearest hop outwards, skipping our own proxies.
        for hop in reversed(hops):
            if not _in_networks(hop, trusted_proxies):
                return hop
    return peer


def _in_networks(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for network in networks:
        try:
            if ip in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue
    return False


def address_allowed(address: str | None, allowlist: list[str]) -> bool:
    return not allowlist or (address is not None and _in_networks(address, allowlist))


def wire_number(value: Decimal | int | None) -> int | float | None:
    """Decimal to a JSON number. Values are cents or finer; float's shortest repr prints them exactly."""
    if value is None:
        return None
    value = Decimal(value)
    return int(value) if value == value.to_integral_value() else float(value)


class RefuseNul:
    """ASGI middleware: a NUL in the path or the query string is a 400, whatever the route."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and (has_nul(scope["path"].encode()) or has_nul(scope["query_string"])):
            await PlainTextResponse("bad request: NUL character", status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SourceAllowlist:
    """ASGI middleware: requests under `prefix` must come from `allowed` networks (when any are set).
    Africa's Talking does not sign USSD hops, so its published addresses are the only check there is."""

    def __init__(self, app, *, prefix: str, allowed: list[str], trusted_proxies: list[str]) -> None:
        self.app, self.prefix, self.allowed, self.trusted = app, prefix, allowed, trusted_proxies

    async def __call__(self, scope, receive, send) -> None:
        if self.allowed and scope["type"] == "http" and scope["path"].startswith(self.prefix):
            source = client_address(Request(scope), self.trusted)
            if not address_allowed(source, self.allowed):
                response = PlainTextResponse("END Not allowed.", status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guard_secret_path(request: Request, settings: Any, allowed: list, *, what: str) -> tuple[Response | None, str | None]:
    """The Daraja and Africa's Talking callbacks' door: the secret path token (CALLBACK_TOKEN, compared in
    constant time; a wrong one is 404, nothing written, nothing revealed), then the source address against
    `allowed` (403). Returns (the refusal or None, the client's address)."""
    expected = settings.callback_token.get_secret_value().encode()
    presented = request.path_params["token"].encode()
    if not expected or not hmac.compare_digest(presented, expected):
        return error_response(404, "not found", "not_found"), None
    source = client_address(request, settings.trusted_proxy_list)
    if not address_allowed(source, allowed):
        log.warning("%s refused from %s (not in its allowlist)", what, source)
        return error_response(403, "source address not allowed", "forbidden"), source
    return None, source
