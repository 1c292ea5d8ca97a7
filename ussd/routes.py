"""`POST /ussd` (Africa's Talking's USSD callback) and `POST /ussd/events` (its end-of-session report).

Africa's Talking ends the session on any non-200 answer or an answer not starting `CON `/`END `, so
every path answers 200 with text — bad input gets a re-prompt or a polite `END`, never a 5xx. Nothing
here calls Daraja or Tuya: the STK push goes out from a job after the session has closed.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_to_bytes

from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from core.dialogue import texts
from core.shared.inbound import TooLarge, read_capped
from core.shared.phone import mask_phone
from ussd.hop import Answer, UssdDeps, answer, ending, parse_hop

log = logging.getLogger("lipameter.ussd")

MAX_BODY = 8 * 1024
EVENT_FIELDS = ("date", "sessionId", "serviceCode", "networkCode", "phoneNumber", "status", "cost",
                "durationInMillis", "hopsCount", "input", "lastAppResponse", "errorMessage")


class UssdMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.hops = Counter("lipameter_ussd_hops_total", "USSD hops answered, by outcome", ["outcome"],
                            registry=registry)
        self.sessions = Counter("lipameter_ussd_sessions_ended_total",
                                "Africa's Talking end-of-session reports, by status", ["status"], registry=registry)
        self._hops_by_outcome: dict[str, Any] = {}

    def answered(self, outcome: str) -> None:
        # labels() takes a lock and checks its arguments each call; a hop's outcome is one of a handful.
        counter = self._hops_by_outcome.get(outcome)
        if counter is None:
            counter = self._hops_by_outcome[outcome] = self.hops.labels(outcome=outcome)
        counter.inc()


async def _form(request: Request) -> dict[str, list[str]]:
    # Not request.form(): the first hop's `text` is empty and must stay a key.
    body = await read_capped(request.stream(), MAX_BODY, declared=request.headers.get("content-length"))
    return form_fields(body)


def form_fields(body: bytes) -> dict[str, list[str]]:
    """An application/x-www-form-urlencoded body as `parse_qs(keep_blank_values=True)` reads it (a property
    test holds the two equal), with NULs dropped from the values: a NUL is never a keypress, and PostgreSQL
    refuses it in text. parse_qs took ~29 µs for a hop's five fields, most of it unquoting fields that
    have nothing to unquote; this takes ~12."""
    fields: dict[str, list[str]] = {}
    for pair in body.decode("utf-8", errors="replace").split("&"):
        if pair:
            name, _, value = pair.partition("=")
            fields.setdefault(_unquoted(name), []).append(_unquoted(value).replace("\x00", ""))
    return fields


def _unquoted(text: str) -> str:
    # unquote_plus's result; unquote_to_bytes over the whole field is ~2 µs where unquote's walk over
    # its ASCII runs is ~4.5 (Africa's Talking escapes `*`, `#` and `+`: two fields of every hop).
    text = text.replace("+", " ")
    return unquote_to_bytes(text).decode("utf-8", errors="replace") if "%" in text else text


def ussd_routes(deps: UssdDeps, metrics: UssdMetrics) -> list[Route]:
    """Routes bound to the process's USSD dependencies (built once, by the composition root)."""

    async def ussd(request: Request) -> Response:
        return await answer_hop(request, deps, metrics)

    async def events(request: Request) -> Response:
        return await record_event(request, deps, metrics)

    return [Route("/ussd", ussd, methods=["POST"]), Route("/ussd/events", events, methods=["POST"])]


async def answer_hop(request: Request, deps: UssdDeps, metrics: UssdMetrics) -> Response:
    try:
        hop = parse_hop(await _form(request))
        result = await answer(hop, deps) if hop else Answer(ending(texts.BILINGUAL_EXPIRED), "refused")
    except TooLarge:
        result = Answer(ending(texts.BILINGUAL_EXPIRED), "refused")
    except Exception:  # the tenant gets a polite END; we get the traceback
        log.exception("ussd hop failed")
        result = Answer(ending(texts.BILINGUAL_TROUBLE), "error")
    metrics.answered(result.outcome)
    return PlainTextResponse(result.text)


async def record_event(request: Request, deps: UssdDeps, metrics: UssdMetrics) -> Response:
    """Logs, a metric and the session row's end status. Never touches a payment."""
    try:
        form = await _form(request)
    except TooLarge:
        return PlainTextResponse("request body too large", status_code=413)
    report = {name: (form.get(name) or [""])[0][:200] for name in EVENT_FIELDS if name in form}
    status, session_id = report.get("status") or "unknown", report.get("sessionId", "")[:100]
    metrics.sessions.labels(status=status if status in ("Success", "Incomplete", "Failed") else "other").inc()
    report["phoneNumber"] = mask_phone(report.get("phoneNumber", ""))  # kept for support, never in full
    known = bool(session_id) and await deps.sessions.record_end(session_id, status=status, report=report,
                                                                at=deps.dialogue.clock.now())
    log.info("ussd session %s ended: %s (%s hops)%s%s", session_id, status, report.get("hopsCount", "?"),
             f", error: {report['errorMessage']}" if report.get("errorMessage") else "",
             "" if known else " [unknown session]")
    return PlainTextResponse("OK")
