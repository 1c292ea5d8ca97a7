"""Meta's webhook deliveries, read: the signature first, then the messages and status reports inside.

A delivery is `{"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages",
"value": {"metadata": {"phone_number_id"}, "contacts", "messages" | "statuses"}}]}]}`; one may hold
several messages and statuses, for our number or (one app, several numbers) for another.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Hub-Signature-256"
MAX_ID = 128
MAX_TEXT = 4096  # Meta's own limit for a text message


def signature_of(body: bytes, app_secret: str) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signed(body: bytes, header: str, app_secret: str) -> bool:
    """The X-Hub-Signature-256 header is HMAC-SHA256 of the raw body with the app secret. No secret
    configured refuses everything: an open webhook would let anyone speak as any phone."""
    if not app_secret or not header:
        return False
    return hmac.compare_digest(header.strip().encode(), signature_of(body, app_secret).encode())


@dataclass(frozen=True)
class Incoming:
    """One message from a WhatsApp user, reduced to what the conversation needs."""

    message_id: str
    wa_id: str  # the sender's number, digits only
    kind: str  # text | reply | other
    text: str = ""  # a text message (or a template quick-reply's text)
    reply_id: str = ""  # the id of the tapped button or list row
    context_id: str = ""  # the id of our message the button was on
    name: str = ""  # the sender's WhatsApp profile name


@dataclass(frozen=True)
class StatusReport:
    message_id: str
    wa_id: str
    status: str  # sent | delivered | read | failed (and whatever Meta adds)
    error: str | None = None


def read_delivery(data: object, *, phone_number_id: str) -> tuple[list[Incoming], list[StatusReport]]:
    """The messages and statuses for our number; anything malformed is skipped, never fatal."""
    messages: list[Incoming] = []
    statuses: list[StatusReport] = []
    if not isinstance(data, dict) or data.get("object") != "whatsapp_business_account":
        return messages, statuses
    for entry in _dicts(data.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if change.get("field") != "messages" or not isinstance(value, dict):
                continue
            metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
            if phone_number_id and str(metadata.get("phone_number_id") or "") != phone_number_id:
                continue  # another number of the same app
            names = {str(c.get("wa_id")): str((c.get("profile") or {}).get("name") or "")[:64]
                     for c in _dicts(value.get("contacts")) if isinstance(c.get("profile"), (dict, type(None)))}
            messages += [m for m in (_message(raw, names) for raw in _dicts(value.get("messages"))) if m]
            statuses += [s for s in (_status(raw) for raw in _dicts(value.get("statuses"))) if s]
    return messages, statuses


def _dicts(value: object) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _field(value: object, limit: int = MAX_ID) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _message(raw: dict, names: dict[str, str]) -> Incoming | None:
    message_id, wa_id = _field(raw.get("id")), _field(raw.get("from"), 20)
    if not message_id or not wa_id.isascii() or not wa_id.isdigit():
        return None
    base = dict(message_id=message_id, wa_id=wa_id, name=names.get(wa_id, ""))
    context = raw.get("context") if isinstance(raw.get("context"), dict) else {}
    kind = raw.get("type")
    if kind == "text" and isinstance(raw.get("text"), dict):
        return Incoming(kind="text", text=_field(raw["text"].get("body"), MAX_TEXT), **base)
    if kind == "button" and isinstance(raw.get("button"), dict):  # a template's quick reply
        return Incoming(kind="text", text=_field(raw["button"].get("text"), MAX_TEXT), **base)
    if kind == "interactive" and isinstance(raw.get("interactive"), dict):
        interactive = raw["interactive"]
        reply = interactive.get(interactive.get("type")) if interactive.get("type") in (
            "button_reply", "list_reply") else None
        if isinstance(reply, dict):
            return Incoming(kind="reply", reply_id=_field(reply.get("id"), 256), text=_field(reply.get("title"), 72),
                            context_id=_field(context.get("id")), **base)
    return Incoming(kind="other", **base)  # a sticker, an image, a location, a reaction…


def _status(raw: dict) -> StatusReport | None:
    message_id, wa_id, status = _field(raw.get("id")), _field(raw.get("recipient_id"), 20), _field(raw.get("status"), 16)
    if not message_id or not status:
        return None
    errors = _dicts(raw.get("errors"))
    error = None
    if errors:
        first = errors[0]
        error = f"{first.get('code', '')} {first.get('title') or first.get('message') or ''}".strip()[:255]
    return StatusReport(message_id=message_id, wa_id=wa_id, status=status, error=error)
