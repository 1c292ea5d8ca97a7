"""Daraja C2B: the validation and confirmation URLs a Paybill or Till calls (registered with
`lipameter mpesa register-urls`). The same guards as the STK callback: a secret path compared in
constant time, the CALLBACK_ALLOWED_IPS allowlist, a capped body. Never a 5xx: a body that cannot be
read is kept and refused with 400; anything else is answered as Daraja expects."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.payments.c2b import OTHER_ERROR, ValidationAnswer, receive_c2b_confirmation, validate_c2b
from core.shared.errors import DomainError
from web.bootstrap import Container, container_of
from web.http import HttpError, error_response, guard_secret_path, read_body

log = logging.getLogger("lipameter.c2b")
ACK = {"ResultCode": 0, "ResultDesc": "Accepted"}


def _guard(request: Request, services: Container) -> tuple[Response | None, str | None]:
    settings = services.settings
    return guard_secret_path(request, settings, settings.allowed_callback_ips, what="C2B request")


async def c2b_validate(request: Request) -> Response:
    services = container_of(request)
    refused, source = _guard(request, services)
    if refused is not None:
        return refused
    try:
        body = await read_body(request, services.settings.max_body_bytes)
    except HttpError:
        return JSONResponse(ValidationAnswer(OTHER_ERROR, "body too large").document())
    answer = await validate_c2b(body, source=source, uow=services.uow(), clock=services.clock, limits=services.limits,
                                shortcode=services.settings.c2b_shortcode or None)
    services.metrics.callbacks.labels(outcome="c2b_accepted" if answer.accepted else "c2b_rejected").inc()
    return JSONResponse(answer.document())


async def c2b_confirm(request: Request) -> Response:
    services = container_of(request)
    refused, source = _guard(request, services)
    if refused is not None:
        return refused
    try:
        body = await read_body(request, services.settings.max_body_bytes)
        receipt = await receive_c2b_confirmation(body, source=source, uow=services.uow(), clock=services.clock)
    except HttpError as error:
        return error_response(error.status, error.message, error.code)
    except DomainError as error:
        services.metrics.callbacks.labels(outcome="c2b_refused").inc()
        return JSONResponse({"ResultCode": 1, "ResultDesc": error.message}, status_code=400)
    services.metrics.callbacks.labels(outcome=f"c2b_{receipt.outcome}").inc()
    return JSONResponse(ACK)


routes = [
    Route("/payments/c2b/validate/{token}", c2b_validate, methods=["POST"]),
    Route("/payments/c2b/confirm/{token}", c2b_confirm, methods=["POST"]),
]
