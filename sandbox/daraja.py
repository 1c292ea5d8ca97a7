"""A Daraja (M-Pesa Express) stand-in that behaves like Safaricom's API on the wire.

Mount it anywhere and point the gateway's base_url at the mount point. Tests and the demo script
outcomes in-process through `app.state.daraja` (a DarajaSandbox) or over HTTP under /sandbox/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import fields
from datetime import datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.daraja_c2b import c2b_routes
from sandbox.daraja_rules import PUSH_ERROR, DarajaError, error_body
from sandbox.daraja_state import DarajaSandbox, Fault, Script, Transaction

log = logging.getLogger("lipameter.sandbox.daraja")
CALLBACK_TIMEOUT_S = 10.0


def create_daraja_sandbox(
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
) -> Starlette:
    sandbox = DarajaSandbox(
        callback_retries=callback_retries,
        callback_retry_delay_s=callback_retry_delay_s,
        consumer_key=consumer_key,
        consumer_secret=consumer_secret,
        shortcode=shortcode,
        passkey=passkey,
        callback_delay_s=callback_delay_s,
        token_ttl_s=token_ttl_s,
        clock=clock,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        sandbox.cancel_callbacks()  # when served on its own; a Mount does not run sub-app lifespans

    app = Starlette(routes=_Handlers(sandbox).routes(), lifespan=lifespan)
    app.state.daraja = sandbox
    return app


class _Handlers:
    def __init__(self, sandbox: DarajaSandbox) -> None:
        self.sandbox = sandbox

    def routes(self) -> list[Route]:
        return [
            Route("/oauth/v1/generate", self.oauth, methods=["GET"]),
            Route("/mpesa/stkpush/v1/processrequest", self.push, methods=["POST"]),
            Route("/mpesa/stkpushquery/v1/query", self.query, methods=["POST"]),
            Route("/sandbox/script", self.script, methods=["POST"]),
            Route("/sandbox/transactions", self.transactions, methods=["GET"]),
            Route("/sandbox/expire-tokens", self.expire_tokens, methods=["POST"]),
            Route("/sandbox/reset", self.reset, methods=["POST"]),
            *c2b_routes(self.sandbox, _json_body),  # Register URL and simulate C2B (Paybill, Till)
        ]

    async def oauth(self, request: Request) -> JSONResponse:
        try:
            token = self.sandbox.issue_token(request.headers.get("authorization"), request.query_params.get("grant_type"))
        except DarajaError as exc:
            # OAuth errors carry an empty requestId.
            return JSONResponse(error_body(exc.code, exc.message, ""), status_code=exc.status)
        return JSONResponse(token)

    async def push(self, request: Request) -> JSONResponse:
        try:
            self.sandbox.authorize("push", request.headers.get("authorization"))
            txn, answer, hold = self.sandbox.push(await _json_body(request))
        except DarajaError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        task = asyncio.create_task(_deliver(self.sandbox, txn))
        self.sandbox.track(task)
        if hold:
            await asyncio.sleep(hold)
        return JSONResponse(answer)

    async def query(self, request: Request) -> JSONResponse:
        try:
            self.sandbox.authorize("query", request.headers.get("authorization"))
            answer = self.sandbox.query(await _json_body(request))
        except DarajaError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        return JSONResponse(answer)

    async def script(self, request: Request) -> JSONResponse:
        """{"outcome": ..., "phone": optional, "count": optional, ...Script or Fault options}."""
        try:
            body = await _json_body(request)
            _apply_script(self.sandbox, body)
        except (DarajaError, TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    async def transactions(self, request: Request) -> JSONResponse:
        txns = [t.as_dict() for t in self.sandbox.transactions]
        counts = {name: getattr(self.sandbox, name) for name in ("token_requests", "push_requests", "query_requests")}
        return JSONResponse({"transactions": txns, **counts})

    async def expire_tokens(self, request: Request) -> JSONResponse:
        self.sandbox.expire_tokens()
        return JSONResponse({"ok": True})

    async def reset(self, request: Request) -> JSONResponse:
        self.sandbox.reset()
        return JSONResponse({"ok": True})


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise DarajaError(400, "400.002.05", "Invalid Request Payload")
    return body


def _apply_script(sandbox: DarajaSandbox, body: dict[str, Any]) -> None:
    body = dict(body)
    outcome, phone = body.pop("outcome", None), body.pop("phone", None)
    count = int(body.pop("count", 1))
    allowed = {f.name for f in fields(Fault if outcome == PUSH_ERROR else Script)} - {"outcome"}
    unknown = set(body) - allowed
    if not isinstance(outcome, str) or unknown:
        raise ValueError(f"need an outcome; unknown options: {sorted(unknown)}")
    if phone:
        sandbox.script_phone(str(phone), outcome, **body)
        return
    for _ in range(count):
        sandbox.script_next(outcome, **body)


async def _deliver(sandbox: DarajaSandbox, txn: Transaction) -> None:
    """After the tenant 'answers' the prompt, POST the callback(s); never let a failure escape."""
    try:
        await asyncio.sleep(sandbox.callback_delay(txn))
        bodies = sandbox.settle(txn.checkout_request_id)
        if not bodies:
            return
        async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_S) as client:
            for body in bodies:
                await _post_callback(sandbox, client, txn, body)
            if txn.script.outcome == "late_success":
                await asyncio.sleep(txn.script.late_after_s)
                late = sandbox.late_success(txn.checkout_request_id)
                if late is not None:
                    await _post_callback(sandbox, client, txn, late)
    except asyncio.CancelledError:
        raise
    except Exception:  # a sandbox bug must not take the server down with it
        log.exception("daraja sandbox: delivering the callback for %s failed", txn.checkout_request_id)


async def _post_callback(sandbox: DarajaSandbox, client: httpx.AsyncClient, txn: Transaction, body: dict[str, Any]) -> None:
    """POST one callback; like Daraja, post it again (a few times) while the answer is not 200."""
    for attempt in range(sandbox.retries_for(txn) + 1):
        if attempt:
            await asyncio.sleep(sandbox.callback_retry_delay_s)
        try:
            response = await client.post(txn.callback_url, json=body)
        except httpx.HTTPError as exc:
            log.warning("daraja sandbox: callback to %s failed: %s", _origin(txn.callback_url), type(exc).__name__)
            sandbox.record_callback(txn.checkout_request_id, body, None, type(exc).__name__)
            continue
        if response.status_code != 200:
            log.warning("daraja sandbox: callback to %s answered %s", _origin(txn.callback_url), response.status_code)
        sandbox.record_callback(txn.checkout_request_id, body, response.status_code, None)
        if response.status_code == 200:
            return


def _origin(url: str) -> str:
    # The callback path carries LipaMeter's callback secret; log only where it went.
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode()}"
