"""The OpenAPI document for the JSON API. Written by hand so that it says exactly what the routes do;
tests/test_openapi.py checks it against the app's routes and answers."""

from __future__ import annotations

_ERROR = {"$ref": "#/components/schemas/Error"}
# The secret path of every callback Safaricom or Africa's Talking posts to.
_TOKEN = [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "CALLBACK_TOKEN; anything else answers 404 and writes nothing."}]
# Safaricom's mobile ranges as Kenya's numbering plan has them (phonenumbers' metadata for KE mobiles).
KENYAN_MOBILE = r"^(\+?254|0)(7[0-9]{2}|1(0[0-8]|1[0-7]|2[014]|30))[0-9]{6}$"


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


SCHEMAS = {
    "Error": {
        "type": "object", "required": ["success", "message", "code"],
        "properties": {"success": {"type": "boolean", "const": False}, "message": {"type": "string"},
                       "code": {"type": "string"}, "paymentId": {"type": "string"}},
    },
    "PaymentRequest": {
        "type": "object", "required": ["amount", "phoneNumber", "meterId"],
        "properties": {
            "amount": {"type": "integer", "minimum": 1, "maximum": 150_000,
                       "description": "Whole KES within MIN_AMOUNT..MAX_AMOUNT; 500 and 500.0 are accepted, 500.5 is not."},
            "phoneNumber": {"type": "string", "pattern": KENYAN_MOBILE,
                            "description": "Kenyan mobile: 07XXXXXXXX, 01XXXXXXXX, +2547XXXXXXXX or 2547XXXXXXXX."},
            "meterId": {"type": "string", "minLength": 1, "maxLength": 36, "pattern": "^[A-Za-z0-9-]+$",
                        "description": "The meter's id (uuid) or its number."},
            "description": {"type": "string", "maxLength": 200,
                            "description": "Shown as TransactionDesc (first 13 characters)."},
        },
    },
    "PaymentStarted": {
        "type": "object",
        "required": ["success", "message", "merchantRequestId", "checkoutRequestId", "mpesaTransactionId", "paymentId", "status"],
        "properties": {
            "success": {"type": "boolean", "const": True}, "message": {"type": "string"},
            "merchantRequestId": {"type": "string"}, "checkoutRequestId": {"type": "string"},
            "mpesaTransactionId": {"type": "string", "description": "LipaMeter's payment id (same as paymentId)."},
            "paymentId": {"type": "string"}, "status": {"type": "string", "enum": ["PENDING"]},
        },
    },
    "Payment": {
        "type": "object",
        "required": ["id", "amount", "phoneNumber", "status", "meterName"],
        "properties": {
            "id": {"type": "string"}, "amount": {"type": "integer"}, "phoneNumber": {"type": "string"},
            "status": {"type": "string", "enum": ["REQUESTED", "PENDING", "COMPLETED", "FAILED", "CANCELLED", "PUSH_FAILED", "NEEDS_REVIEW"]},
            "mpesaReceiptNumber": {"type": ["string", "null"]},
            "transactionDate": {"type": ["string", "null"], "format": "date-time", "description": "Africa/Nairobi time."},
            "meterId": {"type": "string"}, "meterName": {"type": "string"}, "meterNumber": {"type": "string"},
            "balanceBefore": {"type": ["number", "null"]}, "balanceAfter": {"type": ["number", "null"]},
            "unitsAdded": {"type": ["number", "null"]},
            "topUpStatus": {"type": ["string", "null"], "enum": ["QUEUED", "SENDING", "APPLIED", "FAILED", "NEEDS_REVIEW", None]},
            "merchantRequestId": {"type": ["string", "null"]}, "checkoutRequestId": {"type": ["string", "null"]},
            "resultCode": {"type": ["string", "null"]}, "resultDesc": {"type": ["string", "null"]},
            "reviewReason": {"type": ["string", "null"]},
            "channel": {"type": "string", "enum": ["api", "ussd", "telegram", "dashboard", "c2b"]},
            "paidAmount": {"type": ["number", "null"], "description": "KES M-Pesa reported, to the cent."},
            "payerName": {"type": ["string", "null"], "description": "C2B: the payer's names as Daraja sends them (may be masked)."},
            "createdAt": {"type": "string", "format": "date-time"},
        },
    },
    "StkCallback": {
        "type": "object", "description": "Safaricom's STK callback: Body.stkCallback with MerchantRequestID, CheckoutRequestID, ResultCode, ResultDesc and, on success, CallbackMetadata.Item[].",
        "required": ["Body"], "properties": {"Body": {
            "type": "object", "required": ["stkCallback"], "properties": {"stkCallback": {
                "type": "object", "required": ["CheckoutRequestID", "ResultCode"],
                "properties": {"MerchantRequestID": {"type": "string"},
                               "CheckoutRequestID": {"type": "string", "minLength": 1, "maxLength": 64,
                                                     "pattern": "^[^\\x00-\\x1f\\x7f]+$"},
                               "ResultCode": {"type": ["integer", "string"]}, "ResultDesc": {"type": "string"},
                               "CallbackMetadata": {"type": "object", "properties": {"Item": {"type": "array"}}}}}}}},
    },
    "C2bBody": {
        "type": "object", "description": "Safaricom's C2B body: TransactionType, TransID, TransTime, TransAmount, BusinessShortCode, BillRefNumber (the meter number), MSISDN (masked or hashed in v2), FirstName, ...",
        "properties": {"TransID": {"type": "string"}, "TransAmount": {"type": ["string", "number"]},
                       "BillRefNumber": {"type": "string"}, "BusinessShortCode": {"type": ["string", "number"]}},
    },
    "C2bAnswer": {
        "type": "object", "required": ["ResultCode", "ResultDesc"],
        "properties": {"ResultCode": {"type": "string"}, "ResultDesc": {"type": "string"}},
    },
    "CallbackAck": {
        "type": "object", "properties": {"ResultCode": {"type": "integer"}, "ResultDesc": {"type": "string"}},
    },
}


def openapi_document(*, min_amount: int = 1, max_amount: int = 150_000) -> dict:
    """The document, with the deployment's amount limits (MIN_AMOUNT, MAX_AMOUNT) stated in the schema."""
    schemas = {**SCHEMAS, "PaymentRequest": _with_limits(SCHEMAS["PaymentRequest"], min_amount, max_amount)}
    return _document(schemas)


def _with_limits(request: dict, min_amount: int, max_amount: int) -> dict:
    amount = {**request["properties"]["amount"], "minimum": min_amount, "maximum": max_amount}
    return {**request, "properties": {**request["properties"], "amount": amount}}


def _document(schemas: dict) -> dict:
    bearer = [{"apiKey": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "LipaMeter", "version": "0.1.0",
                 "description": "Pay for prepaid electricity with M-Pesa; completed payments top up the Tuya meter."},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "A key from API_KEYS."}},
        },
        "paths": {
            "/mpesa/payments": {"post": {
                "summary": "Send an M-Pesa STK push for a meter", "security": bearer,
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[\\x21-\\x7e]+$"},
                                "description": "Repeat a request safely: the same key returns the first answer."}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaymentRequest"}}}},
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/PaymentStarted"}, "Prompt sent; the callback settles it."),
                    "400": _error("Not JSON, or a field missing."), "401": _error("Missing or wrong API key."),
                    "404": _error("Unknown meter."), "409": _error("A prompt is already waiting on this phone, or the Idempotency-Key was used for another payment, "
                                  "or (code idempotency_in_progress, with Retry-After) the first request with this key is still in flight."),
                    "413": _error("Body too large."), "422": _error("Invalid amount, phone number, or inactive meter."),
                    "502": _error("M-Pesa refused or failed to send the prompt (code: Daraja's errorCode), or gave "
                                  "no usable answer (code push_outcome_unknown: the prompt may still arrive; "
                                  "it is never sent twice)."),
                },
            }},
            "/mpesa/payments/{id}": {"get": {
                "summary": "A payment, by its id or CheckoutRequestID, with its top-up", "security": bearer,
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"$ref": "#/components/schemas/Payment"}, "The payment."),
                              "401": _error("Missing or wrong API key."), "404": _error("No such payment.")},
            }},
            "/mpesa/callback/{token}": {"post": {
                "summary": "Daraja's STK callback, the seed's path (same handler as /payments/callback/{token})",
                "parameters": _TOKEN,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StkCallback"}}}},
                "responses": {"200": _json({"$ref": "#/components/schemas/CallbackAck"}, "Stored and applied at most once."),
                              "400": _json({"$ref": "#/components/schemas/CallbackAck"}, "Not an STK callback (stored for review)."),
                              "403": _error("Source address not in CALLBACK_ALLOWED_IPS."), "404": _error("Wrong token."),
                              "413": _error("Body too large.")},
            }},
            "/payments/callback/{token}": {"post": {
                "summary": "Daraja's STK callback (Safaricom only); the CallBackURL of every STK push",
                "parameters": _TOKEN,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StkCallback"}}}},
                "responses": {"200": _json({"$ref": "#/components/schemas/CallbackAck"}, "Stored and applied at most once."),
                              "400": _json({"$ref": "#/components/schemas/CallbackAck"}, "Not an STK callback (stored for review)."),
                              "403": _error("Source address not in CALLBACK_ALLOWED_IPS."), "404": _error("Wrong token."),
                              "413": _error("Body too large.")},
            }},
            "/payments/c2b/validate/{token}": {"post": {
                "summary": "Daraja's C2B validation (Paybill/Till, when external validation is on): accept or reject",
                "parameters": _TOKEN,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/C2bBody"}}}},
                "responses": {"200": _json({"$ref": "#/components/schemas/C2bAnswer"}, "ResultCode 0 accepts; C2B00012 (account), C2B00013 (amount), C2B00015 (shortcode) or C2B00016 (other) rejects, and the money stays with the payer."),
                              "403": _error("Source address not in CALLBACK_ALLOWED_IPS."), "404": _error("Wrong token.")},
            }},
            "/payments/c2b/confirm/{token}": {"post": {
                "summary": "Daraja's C2B confirmation: stored raw first, credited once per TransID (or a review)",
                "parameters": _TOKEN,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/C2bBody"}}}},
                "responses": {"200": _json({"$ref": "#/components/schemas/CallbackAck"}, "Stored; applied at most once."),
                              "400": _json({"$ref": "#/components/schemas/CallbackAck"}, "Not a C2B confirmation (stored for review)."),
                              "403": _error("Source address not in CALLBACK_ALLOWED_IPS."), "404": _error("Wrong token."),
                              "413": _error("Body too large.")},
            }},
            "/sms/delivery/{token}": {"post": {
                "summary": "Africa's Talking SMS delivery report (form-encoded: id, status, phoneNumber, networkCode, failureReason)",
                "parameters": _TOKEN,
                "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["id", "status"], "properties": {"id": {"type": "string"}, "status": {"type": "string"}, "failureReason": {"type": "string"}}}}}},
                "responses": {"200": {"description": "Recorded (or an id we never sent: accepted and logged)."},
                              "400": _error("Not a delivery report."), "403": _error("Source address not allowed."),
                              "404": _error("Wrong token."), "413": _error("Body too large.")},
            }},
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "The database answers", "responses": {"200": {"description": "ok"}, "503": {"description": "database unreachable"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}},
        },
    }
