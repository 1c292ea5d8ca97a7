"""The seed's JSON API: start a payment, take Daraja's callback, read a payment."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.payments.model import Channel, PaymentStatus
from core.payments.service import InitiatePayment, PaymentStarted, initiate_payment, receive_callback
from core.shared.clock import NAIROBI
from core.shared.errors import DomainError
from storage.views import payment_view
from web.bootstrap import container_of
from web.http import (
    HttpError,
    check_json_depth,
    domain_status,
    error_response,
    guard_secret_path,
    read_body,
    read_json_object,
    require_api_key,
    wire_number,
)

log = logging.getLogger("lipameter.api")
REQUIRED_FIELDS = ("amount", "phoneNumber", "meterId")
ACK = {"ResultCode": 0, "ResultDesc": "Accepted"}


async def create_payment(request: Request) -> Response:
    services = container_of(request)
    try:
        require_api_key(request, services.settings.api_key_list)
        body = await read_json_object(request, services.settings.max_body_bytes)
        missing = [name for name in REQUIRED_FIELDS if body.get(name) in (None, "")]
        if missing:
            raise HttpError(400, f"missing field(s): {', '.join(missing)}", "missing_field")
        description = body.get("description") or ""
        if not isinstance(description, str):
            raise HttpError(400, "description must be a string", "invalid_description")
        key = request.headers.get("idempotency-key")
        if key is not None and not (0 < len(key) <= 128):
            raise HttpError(400, "Idempotency-Key must be 1..128 characters", "invalid_idempotency_key")
        started = await initiate_payment(
            InitiatePayment(amount=body["amount"], phone=body["phoneNumber"], meter_ref=body["meterId"],
                            description=description, channel=Channel.API, idempotency_key=key),
            uow=services.uow(), gateway=services.payment_gateway, limits=services.limits, clock=services.clock,
            verify=services.settings.verify_callbacks,
        )
    except HttpError as error:
        return error_response(error.status, error.message, error.code)
    except DomainError as error:
        return error_response(domain_status(error), error.message, error.code)
    services.metrics.payments_started.labels(channel="api").inc()
    if started.replayed and _in_flight(started.payment, services):
        response = error_response(409, "the first request with this Idempotency-Key is still in progress; "
                                  "retry in a few seconds for its result", "idempotency_in_progress",
                                  paymentId=started.payment.id)
        response.headers["Retry-After"] = str(RETRY_IN_FLIGHT_S)
        return response
    return _started_response(started)


RETRY_IN_FLIGHT_S = 2


def _in_flight(payment, services) -> bool:
    """A replay that finds the first request still pushing (no answer from Daraja yet) must not read that
    as "outcome unknown": the push may take up to two Daraja timeouts (token, then the push itself)."""
    if payment.status is not PaymentStatus.REQUESTED:
        return False
    started = payment.pushed_at or payment.created_at
    window = 2 * services.settings.daraja_timeout_s + 5
    return (services.clock.now() - started).total_seconds() < window


def _started_response(started: PaymentStarted) -> JSONResponse:
    payment = started.payment
    if payment.status is PaymentStatus.PUSH_FAILED:
        return error_response(502, payment.result_desc or "M-Pesa could not send the payment prompt",
                              payment.result_code or "push_failed", paymentId=payment.id)
    if payment.status is PaymentStatus.REQUESTED:
        # No usable answer from Daraja: the prompt may be on the phone. Not retried, never doubled;
        # a callback still settles it, else a person reviews it.
        return error_response(502, "M-Pesa did not confirm the payment prompt; if it appears on the phone, "
                              "paying completes this payment (see GET /mpesa/payments/{id})",
                              "push_outcome_unknown", paymentId=payment.id)
    return JSONResponse({
        "success": True,
        "message": "Payment initiated" if not started.replayed else "Payment already initiated",
        "merchantRequestId": payment.merchant_request_id,
        "checkoutRequestId": payment.checkout_request_id,
        "mpesaTransactionId": payment.id,
        "paymentId": payment.id,
        "status": payment.status.wire,
    })


async def mpesa_callback(request: Request) -> Response:
    services = container_of(request)
    settings = services.settings
    refused, source = guard_secret_path(request, settings, settings.allowed_callback_ips, what="callback")
    if refused is not None:
        return refused
    in_flight = _callbacks_in_flight(request)
    in_flight.count += 1
    apply_now = in_flight.count <= settings.callback_apply_inline_max  # before any await: the first few apply
    try:
        body = await read_body(request, settings.max_body_bytes)
        check_json_depth(body)  # refused before it is stored: the dashboard renders every stored body
        receipt = await receive_callback(body, source=source, uow=services.uow(), clock=services.clock,
                                         verify=settings.verify_callbacks, apply_now=apply_now)
        if not apply_now:
            services.worker.wake_inbox()
        elif receipt.outcome == "completed":
            services.worker.wake_jobs()  # its top-up is queued: this process's worker starts it now
    except HttpError as error:
        return error_response(error.status, error.message, error.code)
    except DomainError as error:
        services.metrics.callbacks.labels(outcome="malformed").inc()
        return JSONResponse({"ResultCode": 1, "ResultDesc": error.message}, status_code=400)
    finally:
        in_flight.count -= 1
    services.metrics.callbacks.labels(outcome=receipt.outcome).inc()
    return JSONResponse(ACK)


class _InFlight:
    count = 0


def _callbacks_in_flight(request: Request) -> _InFlight:
    """Callbacks this process is handling now: few means apply each before answering (the tenant's
    credit starts at once); many means a rush, where answering fast and draining the inbox keeps up."""
    state = request.app.state
    if not hasattr(state, "callbacks_in_flight"):
        state.callbacks_in_flight = _InFlight()
    return state.callbacks_in_flight


async def get_payment(request: Request) -> Response:
    services = container_of(request)
    try:
        require_api_key(request, services.settings.api_key_list)
    except HttpError as error:
        return error_response(error.status, error.message, error.code)
    ref = request.path_params["payment_id"]
    row = await payment_view(services.engine, ref) if len(ref) <= 64 else None
    if row is None:
        return error_response(404, "no payment with this id, CheckoutRequestID or M-Pesa receipt", "payment_not_found")
    return JSONResponse(payment_document(row))


def payment_document(row: dict) -> dict:
    def local(value):
        return value.astimezone(NAIROBI).isoformat() if value else None

    return {
        "id": row["id"],
        "amount": row["amount"],
        "phoneNumber": row["phone"],
        "status": PaymentStatus(row["status"]).wire,
        "mpesaReceiptNumber": row["mpesa_receipt"],
        "transactionDate": local(row["transaction_date"]),
        "meterId": row["meter_id"],
        "meterName": row["meter_name"],
        "meterNumber": row["meter_number"],
        "balanceBefore": wire_number(row["balance_before"]),
        "balanceAfter": wire_number(row["balance_after"]),
        "unitsAdded": wire_number(row["units_added"]),
        "topUpStatus": row["topup_status"].upper() if row["topup_status"] else None,
        "merchantRequestId": row["merchant_request_id"],
        "checkoutRequestId": row["checkout_request_id"],
        "resultCode": row["result_code"],
        "resultDesc": row["result_desc"],
        "reviewReason": row["review_reason"],
        "channel": row["channel"],
        "paidAmount": wire_number(row["paid_amount"]),
        "payerName": row["payer_name"],
        "createdAt": local(row["created_at"]),
    }


routes = [
    Route("/mpesa/payments", create_payment, methods=["POST"]),
    Route("/mpesa/payments/{payment_id}", get_payment, methods=["GET"]),
    Route("/mpesa/callback/{token}", mpesa_callback, methods=["POST"]),  # the seed's contract, kept
    Route("/payments/callback/{token}", mpesa_callback, methods=["POST"]),  # the STK push's CallBackURL
]
