"""`POST /sms/delivery/{token}`: Africa's Talking's SMS delivery reports (core/notify/delivery.py).

Guarded like the Daraja callback: a secret path (CALLBACK_TOKEN, compared in constant time; a wrong
one is a 404 that reveals nothing), a source allowlist (SMS_REPORT_ALLOWED_IPS, else USSD_ALLOWED_IPS:
AT's addresses) and a capped, form-encoded body. A report we cannot read is a 400; a report for a
message we never sent is a quiet 200; nothing here is ever a 5xx: a report is information, not money,
so one that cannot be stored (the database is away) is logged and answered 200.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.notify.delivery import parse_report, record_delivery
from core.shared.errors import DomainError
from core.shared.inbound import NUL_IN_FORM, TooLarge, has_nul, read_capped
from web.bootstrap import container_of
from web.http import error_response, guard_secret_path

log = logging.getLogger("lipameter.sms")
MAX_BODY = 4 * 1024  # a report is a handful of short fields


async def _form(request: Request) -> dict[str, str]:
    raw = await read_capped(request.stream(), MAX_BODY, declared=request.headers.get("content-length"))
    if has_nul(raw, NUL_IN_FORM):
        raise ValueError("NUL in the form")
    text = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError: a 400
    return {name: values[0] for name, values in parse_qs(text, keep_blank_values=True).items()}


async def sms_delivery_report(request: Request) -> Response:
    services = container_of(request)
    settings = services.settings
    refused, _ = guard_secret_path(request, settings, settings.allowed_sms_report_ips, what="SMS delivery report")
    if refused is not None:
        return refused
    try:
        report = parse_report(await _form(request))
    except TooLarge as error:
        return error_response(413, str(error), "body_too_large")
    except ValueError:
        return error_response(400, "the body must be a UTF-8 form (application/x-www-form-urlencoded)", "invalid_form")
    except DomainError as error:
        services.metrics.sms_reports.labels(status="unreadable", outcome="refused").inc()
        return error_response(400, error.message, error.code)
    try:
        outcome = await record_delivery(report, uow=services.uow(), clock=services.clock,
                                        whatsapp_chats=services.whatsapp_chats)
    except Exception:  # the database is away: log it, and do not make AT hammer us
        log.exception("SMS delivery report %s (%s) not recorded", report.message_id, report.status)
        outcome = "error"
    services.metrics.sms_reports.labels(status=report.status, outcome=outcome).inc()
    return JSONResponse({"received": True, "outcome": outcome})


routes = [Route("/sms/delivery/{token}", sms_delivery_report, methods=["POST"])]
