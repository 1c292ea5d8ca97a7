"""Africa's Talking SMS stand-in: `POST /version1/messaging` answered the way the real API answers.

What it copies from the real service, because our gateway (and the official SDK) depend on it:
- auth by the `apiKey` header plus the `username` form field; a mismatch is HTTP 401 with the plain
  text body "The supplied authentication is invalid" (what every AT SDK surfaces to its caller);
- a send is HTTP 201 with `{"SMSMessageData": {"Message", "Recipients": [...]}}`, one entry per number
  in the comma-separated `to`, each with its own `statusCode` — a request can "succeed" while every
  recipient failed, so callers must read the per-recipient status;
- the content type is exactly `application/json`: the Python SDK compares it with `==` and hands back
  raw text otherwise;
- an unregistered sender id refuses the whole request: `Message: "InvalidSenderId"`, no Recipients.

Operator/test side: an inbox (`GET/DELETE /sandbox/sms`, `GET /sandbox/sms/inbox` as HTML), refused
sends (`GET /sandbox/sms/rejected`) and fault injection (`fail_next`, `block`, `delay_next`).

Delivery reports: with `report_url` set (`SmsSandbox.report_to`), each accepted message is followed,
`report_delay_s` later, by AT's form-encoded report (`id`, `status`, `phoneNumber`, `networkCode`,
`retryCount`, and `failureReason` with Failed or Rejected) posted to that URL: Success unless
`report_as(phone, "Rejected", "UserInBlackList")` scripted another outcome for the number. Posted
reports and their answers are listed by `reports()` and `GET /sandbox/sms/reports`.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import re
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

log = logging.getLogger("sandbox.sms")

AUTH_INVALID = "The supplied authentication is invalid"
PRICE_PER_SEGMENT = Decimal("0.8000")  # KES, what AT charges per Safaricom segment

# Per-recipient status codes and names, as Africa's Talking documents them.
STATUS_NAMES: dict[int, str] = {
    100: "Processed",
    101: "Success",
    102: "Queued",
    401: "RiskHold",
    402: "InvalidSenderId",
    403: "InvalidPhoneNumber",
    404: "UnsupportedNumberType",
    405: "InsufficientBalance",
    406: "UserInBlacklist",
    407: "CouldNotRoute",
    500: "InternalServerError",
    501: "GatewayError",
    502: "RejectedByGateway",
}

_KENYA_MOBILE = re.compile(r"^\+254[17]\d{8}$")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
# GSM 03.38 basic set: messages outside it go as UCS-2 and split at 70/67 characters, not 160/153.
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)


def digits(phone: str) -> str:
    """`+254 711…`, `254711…` and a `+` that a query string turned into a space all compare equal."""
    return re.sub(r"\D", "", phone)


def _valid_number(number: str) -> bool:
    if number.startswith("+254"):
        return bool(_KENYA_MOBILE.match(number))
    return bool(_E164.match(number))


def _segments(message: str) -> int:
    single, multi = (160, 153) if set(message) <= _GSM7 else (70, 67)
    return 1 if len(message) <= single else math.ceil(len(message) / multi)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class SmsRecord:
    to: str  # as AT reports it: +2547XXXXXXXX
    message: str
    sender: str | None
    at: str  # ISO 8601 UTC
    messageId: str
    status: str
    statusCode: int

    def as_json(self) -> dict:
        data = asdict(self)
        data["from"] = data.pop("sender")
        return data


@dataclass(frozen=True)
class DeliveryReport:
    """One report the sandbox posted, and the answer it got (0: no answer)."""

    id: str
    status: str
    phoneNumber: str
    networkCode: str
    failureReason: str
    answer: int = 0

    def form(self) -> dict[str, str]:
        fields = {"id": self.id, "status": self.status, "phoneNumber": self.phoneNumber,
                  "networkCode": self.networkCode, "retryCount": "0"}
        if self.failureReason:
            fields["failureReason"] = self.failureReason
        return fields


REPORT_STATUSES = {"Success", "Failed", "Rejected", "Sent", "Submitted", "Buffered"}
SAFARICOM = "63902"  # AT's networkCode for Safaricom; Airtel Kenya is 63903


@dataclass
class _Fault:
    remaining: int
    status_code: int
    http: bool


class SmsSandbox:
    """State shared by the HTTP handlers and the test/demo code (which runs in another thread)."""

    def __init__(self, *, username: str, api_key: str, sender_ids: set[str] | None = None) -> None:
        self.username = username
        self.api_key = api_key
        self.balance = Decimal("1000.0000")  # KES; GET /version1/user reports it, as AT does
        self.sender_ids = sender_ids  # None: any sender id is accepted
        self.requests = 0  # send requests that reached the handler, authenticated or not
        self._lock = threading.Lock()
        self._inbox: list[SmsRecord] = []
        self._rejected: list[SmsRecord] = []
        self._blocked: set[str] = set()
        self._faults: list[_Fault] = []
        self._delays: list[float] = []
        self.report_url = ""  # where delivery reports go; "" sends none
        self.report_delay_s = 0.3  # real reports come seconds after the send was answered
        self._report_scripts: dict[str, tuple[str, str]] = {}
        self._reports: list[DeliveryReport] = []

    def report_to(self, url: str, *, delay_s: float | None = None) -> None:
        """Post a delivery report for every accepted message to `url` ("" stops them)."""
        with self._lock:
            self.report_url = url
            if delay_s is not None:
                self.report_delay_s = delay_s

    def report_as(self, phone: str, status: str = "Failed", reason: str = "DeliveryFailure") -> None:
        """Messages to `phone` are reported `status` (Failed, Rejected, Buffered…) with `reason`
        (UserInBlackList, AbsentSubscriber, DeliveryFailure…), until reset()."""
        with self._lock:
            self._report_scripts[digits(phone)] = (status, reason if status in ("Failed", "Rejected") else "")

    def reports(self, to: str | None = None) -> list[DeliveryReport]:
        with self._lock:
            return [r for r in self._reports if to is None or digits(r.phoneNumber) == digits(to)]

    def report_for(self, record: SmsRecord) -> DeliveryReport:
        with self._lock:
            status, reason = self._report_scripts.get(digits(record.to), ("Success", ""))
        return DeliveryReport(record.messageId, status, record.to, SAFARICOM, reason)

    def note_report(self, report: DeliveryReport) -> None:
        with self._lock:
            self._reports.append(report)

    def fail_next(self, n: int = 1, status_code: int = 500, *, http: bool = False) -> None:
        """The next `n` send requests fail: every recipient gets `status_code` (500, 501, 405, …),
        or with `http=True` the whole request is answered with that HTTP status and a text body."""
        if not http and status_code not in STATUS_NAMES:
            raise ValueError(f"unknown Africa's Talking status code {status_code}")
        with self._lock:
            self._faults.append(_Fault(n, status_code, http))

    def block(self, phone: str) -> None:
        """The number opted out (AT's blacklist): sends to it get 406 UserInBlacklist."""
        with self._lock:
            self._blocked.add(digits(phone))

    def delay_next(self, n: int, seconds: float) -> None:
        """The next `n` send requests answer only after `seconds` (the message is still sent)."""
        with self._lock:
            self._delays.extend([seconds] * n)

    def messages(self, to: str | None = None) -> list[SmsRecord]:
        """Accepted messages, oldest first; `to` in any of our phone formats."""
        with self._lock:
            return [m for m in self._inbox if to is None or digits(m.to) == digits(to)]

    def rejected(self, to: str | None = None) -> list[SmsRecord]:
        with self._lock:
            return [m for m in self._rejected if to is None or digits(m.to) == digits(to)]

    def clear(self) -> None:
        with self._lock:
            self._inbox.clear()
            self._rejected.clear()
            self.requests = 0

    def reset(self) -> None:
        """Clear the inbox and forget every injected fault and block."""
        with self._lock:
            self._blocked.clear()
            self._faults.clear()
            self._delays.clear()
            self._report_scripts.clear()
            self._reports.clear()
        self.clear()

    def note_request(self) -> None:
        with self._lock:
            self.requests += 1

    def take_fault(self) -> _Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.pop(0)
            return fault

    def take_delay(self) -> float:
        with self._lock:
            return self._delays.pop(0) if self._delays else 0.0

    def deliver(self, number: str, message: str, sender: str | None, forced: int | None) -> dict:
        """Decide one recipient's fate, record it, and return AT's recipient entry."""
        with self._lock:
            code = forced or 101
            if not _valid_number(number):
                code = 403
            elif digits(number) in self._blocked:
                code = 406
            ok = code in (100, 101, 102)
            message_id = f"ATXid_{uuid.uuid4().hex}" if ok else "None"
            record = SmsRecord(number, message, sender, _now(), message_id, STATUS_NAMES[code], code)
            (self._inbox if ok else self._rejected).append(record)
        cost = PRICE_PER_SEGMENT * _segments(message) if ok else Decimal(0)
        return {
            "statusCode": code,
            "number": number,
            "status": STATUS_NAMES[code],
            "cost": f"KES {cost:.4f}" if ok else "0",
            "messageId": message_id,
        }


def _form(body: bytes) -> dict[str, str]:
    # parse_qs keeps us on the stdlib (no python-multipart); AT fields are single-valued.
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _json(data: object, status_code: int = 200) -> JSONResponse:
    # JSONResponse sends exactly `application/json` (no charset), which the SDK requires.
    return JSONResponse(data, status_code=status_code)


def _summary(recipients: list[dict]) -> str:
    sent = [r for r in recipients if r["statusCode"] in (100, 101, 102)]
    total = sum(Decimal(r["cost"].split()[1]) for r in sent)
    cost = f"KES {total:.4f}" if sent else "0"
    return f"Sent to {len(sent)}/{len(recipients)} Total Cost: {cost}"


async def _send(request: Request) -> Response:
    sandbox: SmsSandbox = request.app.state.sms
    form = _form(await request.body())
    sandbox.note_request()
    if request.headers.get("apikey") != sandbox.api_key or form.get("username") != sandbox.username:
        return PlainTextResponse(AUTH_INVALID, status_code=401)
    for field in ("to", "message"):
        if not form.get(field):
            return PlainTextResponse(f"Request is missing required form field '{field}'", status_code=400)
    fault = sandbox.take_fault()  # only authenticated, well-formed requests consume a fault
    if delay := sandbox.take_delay():
        await asyncio.sleep(delay)
    if fault and fault.http:
        return PlainTextResponse("Internal Server Error", status_code=fault.status_code)
    sender = form.get("from") or None
    if sender and sandbox.sender_ids is not None and sender not in sandbox.sender_ids:
        return _json({"SMSMessageData": {"Message": "InvalidSenderId", "Recipients": []}}, 201)
    forced = fault.status_code if fault else None
    numbers = [n.strip() for n in form["to"].split(",") if n.strip()]
    recipients = [sandbox.deliver(n, form["message"], sender, forced) for n in numbers]
    sent = {r["messageId"] for r in recipients if r["statusCode"] in (100, 101, 102)}
    accepted = [m for m in sandbox.messages() if m.messageId in sent]
    response = _json({"SMSMessageData": {"Message": _summary(recipients), "Recipients": recipients}}, 201)
    if sandbox.report_url and accepted:
        # After the answer has gone, as AT does: the report follows the send, never precedes it.
        response.background = BackgroundTask(_post_reports, sandbox, [sandbox.report_for(m) for m in accepted])
    return response


async def _post_reports(sandbox: SmsSandbox, reports: list[DeliveryReport]) -> None:
    await asyncio.sleep(sandbox.report_delay_s)
    async with httpx.AsyncClient(timeout=5) as client:
        for report in reports:
            try:
                answer = (await client.post(sandbox.report_url, data=report.form())).status_code
            except httpx.HTTPError as error:
                log.warning("delivery report %s not posted: %s", report.id, error)
                answer = 0
            sandbox.note_report(DeliveryReport(**{**asdict(report), "answer": answer}))


async def _script(request: Request) -> Response:
    """`POST /sandbox/sms/script {"phone", "status", "reason"}`: how messages to `phone` are reported."""
    sandbox: SmsSandbox = request.app.state.sms
    try:
        body = await request.json()
        phone, status = str(body["phone"]), str(body.get("status") or "Failed")
    except (ValueError, KeyError, TypeError):
        return _json({"error": "send {\"phone\", \"status\", \"reason\"}"}, 400)
    if status not in REPORT_STATUSES:
        return _json({"error": f"status must be one of {sorted(REPORT_STATUSES)}"}, 400)
    sandbox.report_as(phone, status, str(body.get("reason") or "DeliveryFailure"))
    return _json({"phone": digits(phone), "status": status})


async def _reports_json(request: Request) -> Response:
    sandbox: SmsSandbox = request.app.state.sms
    return _json([asdict(r) for r in sandbox.reports(request.query_params.get("to"))])


async def _user(request: Request) -> Response:
    # AT's "fetch application data": GET /version1/user?username=…, apiKey header → the balance.
    sandbox: SmsSandbox = request.app.state.sms
    if (request.headers.get("apikey") != sandbox.api_key
            or request.query_params.get("username") != sandbox.username):
        return PlainTextResponse(AUTH_INVALID, status_code=401)
    return _json({"UserData": {"balance": f"KES {sandbox.balance}"}}, 200)


async def _inbox_json(request: Request) -> Response:
    sandbox: SmsSandbox = request.app.state.sms
    if request.method == "DELETE":
        sandbox.clear()
        return Response(status_code=204)
    to = request.query_params.get("to")
    return _json([m.as_json() for m in sandbox.messages(to)])


async def _rejected_json(request: Request) -> Response:
    sandbox: SmsSandbox = request.app.state.sms
    return _json([m.as_json() for m in sandbox.rejected(request.query_params.get("to"))])


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="3">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SMS inbox (sandbox)</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.4rem;
text-align:left;vertical-align:top}}td.msg{{white-space:pre-wrap;max-width:40rem}}
.bad{{color:#a00}}small{{color:#666}}</style></head>
<body><h1>SMS inbox <small>Africa's Talking sandbox &middot; refreshes every 3 s</small></h1>
<table><thead><tr><th>Time (UTC)</th><th>To</th><th>From</th><th>Message</th><th>Status</th></tr></thead>
<tbody>{rows}</tbody></table></body></html>"""


def _row(m: SmsRecord, css: str = "") -> str:
    cells = (m.at[11:19], m.to, m.sender or "AFRICASTKNG", m.message, m.status)
    tds = "".join(
        f'<td class="{"msg" if i == 3 else ""}">{html.escape(c)}</td>' for i, c in enumerate(cells)
    )
    return f'<tr class="{css}">{tds}</tr>'


async def _inbox_html(request: Request) -> Response:
    sandbox: SmsSandbox = request.app.state.sms
    # Newest first on the page: the demo watcher wants the latest receipt at the top.
    rows = [(m.at, _row(m)) for m in sandbox.messages()]
    rows += [(m.at, _row(m, "bad")) for m in sandbox.rejected()]
    body = "".join(r for _, r in sorted(rows, key=lambda x: x[0], reverse=True))
    return HTMLResponse(_PAGE.format(rows=body or '<tr><td colspan="5">No messages yet.</td></tr>'))


def create_sms_sandbox(
    *, username: str, api_key: str, sender_ids: set[str] | None = None
) -> Starlette:
    """An ASGI app speaking Africa's Talking SMS; mount it anywhere and point `AT_API_BASE` at it."""
    app = Starlette(
        routes=[
            Route("/version1/messaging", _send, methods=["POST"]),
            Route("/version1/user", _user, methods=["GET"]),
            Route("/sandbox/sms", _inbox_json, methods=["GET", "DELETE"]),
            Route("/sandbox/sms/rejected", _rejected_json, methods=["GET"]),
            Route("/sandbox/sms/reports", _reports_json, methods=["GET"]),
            Route("/sandbox/sms/script", _script, methods=["POST"]),
            Route("/sandbox/sms/inbox", _inbox_html, methods=["GET"]),
        ]
    )
    app.state.sms = SmsSandbox(username=username, api_key=api_key, sender_ids=sender_ids)
    return app
