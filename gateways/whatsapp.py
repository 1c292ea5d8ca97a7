"""The WhatsApp Cloud API over httpx: `POST {WHATSAPP_API_BASE}/{phone_number_id}/messages`.

Used by the WhatsApp room (the dialogue's screens) and by the worker (receipts: core.ports.WhatsAppSender).
Why not pywa: its client fixes the Graph URL to graph.facebook.com (the sandbox and WHATSAPP_API_BASE
need another), its duplicate filter lives in process memory (we need it in the database, across
replicas), and its webhook handling wants its own server integration and handler dispatch; the three
payload shapes we send are a few dicts.

Cloud API facts it is built around:
- answers `{"messaging_product": "whatsapp", "contacts": [...], "messages": [{"id": "wamid..."}]}`;
  errors `{"error": {"message", "type", "code", "error_subcode", "error_data": {"details"}}}`;
- 131047 "Re-engagement message": the customer has not written for 24 hours, only a template goes;
- 130429 / 131056 / 80007 / 4 are rate limits, 131000 / 1 / 2 and HTTP 5xx are Meta's trouble: try later;
- 190 is a token that expired or was revoked: an operator must fix WHATSAPP_TOKEN;
- the token is a bearer header: it never goes into an error message or a log.
"""

from __future__ import annotations

import logging

import httpx

from core.ports import OutsideWindow
from core.shared.errors import UpstreamError
from gateways.json_http import post_json

log = logging.getLogger("lipameter.whatsapp")

DEFAULT_API_BASE = "https://graph.facebook.com/v21.0"
MAX_TEXT = 4096
OUTSIDE_WINDOW = 131047
TRANSIENT = {1, 2, 4, 80007, 130429, 131000, 131016, 131056}
TOKEN_INVALID = 190


class WhatsAppCloudApi:
    def __init__(self, token: str, phone_number_id: str, *, api_base: str = "",
                 client: httpx.AsyncClient | None = None, timeout_s: float = 10.0) -> None:
        self._url = f"{(api_base or DEFAULT_API_BASE).rstrip('/')}/{phone_number_id}/messages"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._client = client
        self._timeout_s = timeout_s

    def __repr__(self) -> str:  # the headers carry the token
        return "WhatsAppCloudApi()"

    async def send_text(self, wa_id: str, text: str) -> str:
        return await self.send(wa_id, {"type": "text", "text": {"body": text[:MAX_TEXT], "preview_url": False}})

    async def send_template(self, wa_id: str, name: str, language: str, parameters: list[str]) -> str:
        body = [{"type": "text", "text": value} for value in parameters]
        template = {"name": name, "language": {"code": language},
                    "components": [{"type": "body", "parameters": body}] if body else []}
        return await self.send(wa_id, {"type": "template", "template": template})

    async def send(self, wa_id: str, content: dict) -> str:
        """Send one message (`content` is its `type` and that type's object); Meta's message id."""
        payload = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": wa_id, **content}
        status, answer = await post_json(self._client, self._url, payload, service="WhatsApp", code="whatsapp",
                                         timeout_s=self._timeout_s, headers=self._headers)
        messages = answer.get("messages")
        if status < 300 and isinstance(messages, list) and messages and isinstance(messages[0], dict):
            return str(messages[0].get("id") or "")
        raise _error(status, answer)


def _error(status: int, answer: dict) -> UpstreamError:
    error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else status
    details = (error.get("error_data") or {}).get("details") if isinstance(error.get("error_data"), dict) else None
    description = str(details or error.get("message") or f"HTTP {status}")[:200]
    if code == OUTSIDE_WINDOW:
        return OutsideWindow(f"WhatsApp: outside the 24-hour window ({description})", code="whatsapp_outside_window")
    if code in TRANSIENT or status >= 500 or status == 429:
        return UpstreamError(f"WhatsApp is busy: {description}", code="whatsapp_busy", transient=True)
    if code == TOKEN_INVALID or status == 401:
        log.error("WhatsApp refused the access token (%s); check WHATSAPP_TOKEN", code)
    return UpstreamError(f"WhatsApp refused the message: {description}", code="whatsapp_refused")
