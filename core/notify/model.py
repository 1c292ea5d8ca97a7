"""The rows the notify feature reads back: one sent message and what its delivery report said."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SentNotice:
    """A `notifications` row as a delivery report or a fallback sees it."""

    id: int
    event: str
    channel: str  # sms | telegram | whatsapp | whatsapp_tmpl | log
    recipient: str  # masked
    payment_id: str | None
    topup_id: str | None
    message: str
    provider_id: str | None = None  # Africa's Talking's messageId
    delivery_status: str | None = None
    delivery_error: str | None = None
    delivered_at: datetime | None = None
