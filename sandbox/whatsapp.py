"""WhatsApp Cloud API stand-in: `POST /{version}/{phone_number_id}/messages` answered the way
graph.facebook.com answers, and webhook deliveries signed the way Meta signs them.

What it copies from the real service:
- `Authorization: Bearer <token>` (else 401, code 190), our phone number id only (else 400, code 100);
- the payload shapes Meta documents for text, interactive button and list, and template messages
  (sandbox/whatsapp_payloads.py), with Meta's error shape and codes; approved templates are a table;
- answers `{"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}], "messages": [{"id": "wamid…"}]}`;
- the 24-hour customer-service window: opened by each user message; outside it only a template goes
  (131047). Deliberate simplification: Meta accepts such a message and reports it `failed` in a status
  webhook; the sandbox refuses it at once with the same code, which a client must handle either way;
- deliveries to the webhook (`deliver`) carry `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body
  with the app secret>`; a non-2xx answer (or no answer) is retried, a few times, with a short backoff
  (Meta keeps trying for up to a day); `report` delivers a status (sent, delivered, read, failed).

The user's side (`say`, `tap`, `sticker`, `image`, `location`, `reaction`) builds the deliveries Meta
would send; `expire_window` closes a user's window, as a day of silence would. The chat page
(sandbox/whatsapp_chat.py) is built on the same calls.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.whatsapp_payloads import CloudApiError, check, template_text

WINDOW_S = 24 * 3600
RETRY_DELAYS_S = (0.2, 0.5, 1.0)  # after the first attempt; Meta's own backoff is far longer
DEFAULT_TEMPLATES = {"lipameter_receipt": {"en": "LipaMeter receipt: {{1}}", "sw": "Risiti ya LipaMeter: {{1}}"}}


@dataclass
class WaUser:
    wa_id: str
    name: str
    messages: list[dict] = field(default_factory=list)  # both sides, oldest first
    last_inbound: float | None = None  # time.time() of the user's last message: opens the window

    def window_open(self, now: float) -> bool:
        return self.last_inbound is not None and now - self.last_inbound < WINDOW_S


class WhatsAppSandbox:
    """State shared by the HTTP handlers, the chat page and the tests (other threads): one lock."""

    def __init__(self, *, token: str, phone_number_id: str, app_secret: str, webhook_url: str = "",
                 business_number: str = "254700100200", templates: dict | None = None,
                 auto_status: bool = False) -> None:
        self.token, self.phone_number_id, self.app_secret = token, phone_number_id, app_secret
        self.webhook_url = webhook_url  # set in Meta's app dashboard; here by the demo or the tests
        self.business_number = business_number
        self.templates = templates if templates is not None else dict(DEFAULT_TEMPLATES)
        self.auto_status = auto_status  # report `sent` and `delivered` for every message, as Meta does
        self.sent: list[dict] = []  # every accepted payload, with its message id
        self.refused: list[dict] = []  # every refused payload, with the error
        self.deliveries: list[dict] = []  # every webhook attempt: kind, HTTP status (0: no answer)
        self._users: dict[str, WaUser] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # --- the user's side --------------------------------------------------------------------------

    def user(self, wa_id: str, name: str = "Wanjiku") -> WaUser:
        with self._lock:
            if wa_id not in self._users:
                self._users[wa_id] = WaUser(wa_id, name)
            return self._users[wa_id]

    def _message_id(self) -> str:
        return f"wamid.HBgM{next(self._ids):06d}{secrets.token_hex(6).upper()}"

    def _from_user(self, wa_id: str, content: dict) -> dict:
        with self._lock:
            user = self.user(wa_id)
            now = time.time()
            message = {"from": wa_id, "id": self._message_id(), "timestamp": str(int(now)), **content}
            user.messages.append({"side": "user", "message": message, "at": now})
            user.last_inbound = now
            return self._envelope(wa_id, {"contacts": [{"profile": {"name": user.name}, "wa_id": wa_id}],
                                          "messages": [message]})

    def _envelope(self, wa_id: str, value: dict) -> dict:
        metadata = {"display_phone_number": self.business_number, "phone_number_id": self.phone_number_id}
        return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
            {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}]}]}

    def say(self, wa_id: str, text: str) -> dict:
        return self._from_user(wa_id, {"type": "text", "text": {"body": text}})

    def tap(self, wa_id: str, message_id: str, *, title: str | None = None, reply_id: str | None = None) -> dict:
        """A tap on a reply button or a list row of our message. By `title`: only what the message shows
        (as in the app). By `reply_id`: anything, as a stale or forged client could send."""
        with self._lock:
            ours = self.business_message(wa_id, message_id)
            choices = _choices(ours["payload"]) if ours else []
            if title is not None:
                found = next((c for c in choices if c["title"] == title), None)
                if found is None:
                    raise LookupError(f"message {message_id} shows no button or row {title!r}")
                reply_id = found["id"]
            chosen = next((c for c in choices if c["id"] == reply_id), {"id": reply_id or "", "title": title or "?"})
            kind = "list_reply" if ours and ours["payload"].get("interactive", {}).get("type") == "list" else "button_reply"
            reply = {"id": chosen["id"], "title": chosen["title"]}
            return self._from_user(wa_id, {"type": "interactive", "context": {
                "from": self.business_number, "id": message_id}, "interactive": {"type": kind, kind: reply}})

    def sticker(self, wa_id: str) -> dict:
        return self._from_user(wa_id, {"type": "sticker", "sticker": {
            "mime_type": "image/webp", "sha256": "x", "id": "1223334444", "animated": False}})

    def image(self, wa_id: str) -> dict:
        return self._from_user(wa_id, {"type": "image", "image": {
            "caption": "my meter", "mime_type": "image/jpeg", "sha256": "y", "id": "2334445555"}})

    def location(self, wa_id: str) -> dict:
        return self._from_user(wa_id, {"type": "location", "location": {
            "latitude": -1.2921, "longitude": 36.8219, "name": "Kilimani Court"}})

    def reaction(self, wa_id: str, message_id: str) -> dict:
        return self._from_user(wa_id, {"type": "reaction", "reaction": {"message_id": message_id,
                                                                         "emoji": "\U0001f44d"}})

    def expire_window(self, wa_id: str) -> None:
        with self._lock:
            self.user(wa_id).last_inbound = time.time() - WINDOW_S - 60

    def sign(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()

    def deliver(self, delivery: dict, *, timeout: float = 15, retries: bool = True) -> int:
        """POST a delivery to the webhook, signed, as Meta does; retried on a non-2xx answer. The last status."""
        if not self.webhook_url:
            raise RuntimeError("no webhook URL configured")
        body = json.dumps(delivery).encode()
        delays = (0.0, *RETRY_DELAYS_S) if retries else (0.0,)
        status = 0
        for delay in delays:
            time.sleep(delay)
            request = urllib.request.Request(self.webhook_url, data=body, method="POST", headers={
                "Content-Type": "application/json", "X-Hub-Signature-256": self.sign(body)})
            try:
                with urllib.request.urlopen(request, timeout=timeout) as answer:
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            except (urllib.error.URLError, OSError):
                status = 0
            with self._lock:
                self.deliveries.append({"kind": _kind_of(delivery), "status": status})
            if 200 <= status < 300:
                break
        return status

    def deliver_later(self, delivery: dict) -> None:
        """Deliver from a thread: the chat page and the demo's app share one event loop with the sandbox."""
        threading.Thread(target=self.deliver, args=(delivery,), daemon=True, name="whatsapp-delivery").start()

    def report(self, wa_id: str, message_id: str, status: str, *, error: dict | None = None) -> dict:
        """The status webhook Meta sends about a message we sent."""
        with self._lock:
            ours = self.business_message(wa_id, message_id)
            if ours is not None:
                ours["status"] = status
        item = {"id": message_id, "status": status, "timestamp": str(int(time.time())), "recipient_id": wa_id}
        if error:
            item["errors"] = [error]
        return self._envelope(wa_id, {"statuses": [item]})

    # --- what the business sent -----------------------------------------------------------------

    def messages(self, wa_id: str) -> list[dict]:
        with self._lock:
            user = self._users.get(wa_id)
            return [dict(m) for m in user.messages] if user else []

    def business_messages(self, wa_id: str) -> list[dict]:
        return [m for m in self.messages(wa_id) if m["side"] == "business"]

    def business_message(self, wa_id: str, message_id: str) -> dict | None:
        user = self._users.get(wa_id)
        return next((m for m in user.messages if m["side"] == "business" and m["id"] == message_id), None) if user else None

    # --- the Cloud API --------------------------------------------------------------------------

    def send(self, phone_number_id: str, authorization: str, payload: object) -> dict:
        if not hmac.compare_digest(authorization.encode(), f"Bearer {self.token}".encode()):
            raise CloudApiError(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if phone_number_id != self.phone_number_id:
            raise CloudApiError(400, 100, f"Unsupported post request. Object with ID '{phone_number_id[:40]}' does "
                                          "not exist, cannot be loaded due to missing permissions, or does not "
                                          "support this operation")
        with self._lock:
            try:
                to = check(payload, self.templates)
                user = self.user(to)
                if payload.get("type", "text") != "template" and not user.window_open(time.time()):
                    raise CloudApiError(400, 131047, "(#131047) Re-engagement message",
                                        "Message failed to send because more than 24 hours have passed since the "
                                        "customer last replied to this number.")
            except CloudApiError as error:
                self.refused.append({"payload": payload, "code": error.code, "details": error.details})
                raise
            message_id = self._message_id()
            shown = {"side": "business", "id": message_id, "payload": payload, "at": time.time(), "status": "accepted",
                     "text": self._shown_text(payload)}
            user.messages.append(shown)
            self.sent.append({"id": message_id, "to": to, "payload": payload})
        if self.auto_status and self.webhook_url:
            threading.Thread(target=self._auto_report, args=(to, message_id), daemon=True).start()
        return {"messaging_product": "whatsapp", "contacts": [{"input": str(payload.get("to")), "wa_id": to}],
                "messages": [{"id": message_id}]}

    def _auto_report(self, wa_id: str, message_id: str) -> None:
        for status in ("sent", "delivered"):
            self.deliver(self.report(wa_id, message_id, status))

    def _shown_text(self, payload: dict) -> str:
        kind = payload.get("type", "text")
        if kind == "text":
            return payload["text"]["body"]
        if kind == "template":
            return template_text(payload["template"], self.templates)
        return payload["interactive"]["body"]["text"]


def _choices(payload: dict) -> list[dict]:
    interactive = payload.get("interactive") or {}
    action = interactive.get("action") or {}
    if interactive.get("type") == "button":
        return [b["reply"] for b in action.get("buttons", [])]
    if interactive.get("type") == "list":
        return [row for section in action.get("sections", []) for row in section["rows"]]
    return []


def _kind_of(delivery: dict) -> str:
    try:
        value = delivery["entry"][0]["changes"][0]["value"]
    except (KeyError, IndexError, TypeError):
        return "other"
    return "statuses" if "statuses" in value else "messages"


async def _messages_endpoint(request: Request) -> JSONResponse:
    sandbox: WhatsAppSandbox = request.app.state.whatsapp
    try:
        payload = await request.json()
    except ValueError:
        payload = None
    try:
        answer = sandbox.send(request.path_params["phone_number_id"], request.headers.get("authorization", ""),
                              payload)
    except CloudApiError as error:
        return JSONResponse(error.answer(), status_code=error.status)
    return JSONResponse(answer)


def create_whatsapp_sandbox(*, token: str, phone_number_id: str, app_secret: str, webhook_url: str = "",
                            auto_status: bool = False) -> Starlette:
    """An ASGI app speaking the Cloud API; point WHATSAPP_API_BASE at `<where it is mounted>/v21.0`."""
    from sandbox.whatsapp_chat import chat_routes

    app = Starlette(routes=[*chat_routes,
                            Route("/{version}/{phone_number_id}/messages", _messages_endpoint, methods=["POST"])])
    app.state.whatsapp = WhatsAppSandbox(token=token, phone_number_id=phone_number_id, app_secret=app_secret,
                                         webhook_url=webhook_url, auto_status=auto_status)
    return app
