"""Where a channel keeps a conversation between two inputs: plain rows, read and written through the
stores declared in core.ports (UssdSessionStore, TelegramChatStore, TelegramAccounts, WhatsAppChatStore)
and implemented in storage/ussd_sessions.py, storage/telegram_chats.py and storage/whatsapp_chats.py.

Each row holds the dialogue's state (core.dialogue.types.DialogueState) as JSON, plus what its channel
needs to answer a retry or a stale button without acting twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class UssdSession:
    """One Africa's Talking session, keyed by its sessionId."""

    session_id: str
    phone: str
    state: dict  # DialogueState as JSON
    last_text: str  # the cumulative input of the last hop answered…
    last_answer: str  # …and what we answered, replayed when the gateway retries that hop
    hops: int
    ended: bool
    created_at: datetime
    updated_at: datetime
    service_code: str | None = None
    network_code: str | None = None
    payment_id: str | None = None
    end_status: str | None = None  # Africa's Talking's end-of-session report
    end_report: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TelegramChat:
    """One private chat with the bot. `version` grows with every screen; a button carries the version
    it was drawn at, and `last_message_id` is the message holding the live keyboard."""

    chat_id: int
    user_id: int
    state: dict | None  # DialogueState as JSON
    version: int
    last_message_id: int | None
    payment_id: str | None


@dataclass(frozen=True)
class TelegramAccount:
    """The tenant a Telegram user is, once they shared their own phone number."""

    tenant_id: str
    phone: str
    name: str
    language: str


@dataclass(frozen=True)
class WhatsAppChat:
    """One WhatsApp conversation, keyed by the sender's wa_id (their phone, 2547XXXXXXXX). `version` grows
    with every screen; a button's id carries the version it was drawn at, so an old button is recognised.
    `last_inbound_at` opens Meta's 24-hour customer-service window (free-form messages allowed)."""

    wa_id: str
    state: dict | None  # DialogueState as JSON
    version: int
    payment_id: str | None
    last_inbound_at: datetime | None
