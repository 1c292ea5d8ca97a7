"""What the bot's conversation logic works with, free of python-telegram-bot: what came in (`Incoming`),
what to do about it (`Send`, `Edit`, `AnswerButton`), and where it keeps chats and accounts (Protocols
implemented by storage/telegram_chats.py, chosen in web/app.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Protocol

from core.dialogue.service import PaymentHistory
from core.payments.service import PaymentLimits
from core.ports import Clock, MeterBalanceReader, UnitOfWork

# --- what came in ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """One Telegram update, reduced to what the conversation needs."""

    chat_id: int
    user_id: int
    kind: str  # text | contact | button | other | group
    first_name: str = ""
    language_code: str = ""
    text: str = ""  # a text message (commands included)
    contact_user_id: int | None = None  # whose contact was shared (None: not a Telegram user's own card)
    contact_phone: str = ""
    button: str = ""  # callback data
    callback_id: str = ""
    message_id: int | None = None  # the message a button was pressed on
    message_text: str = ""  # …its text, and the pressed button's label, to show what was chosen
    button_label: str = ""


# --- what to do ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Button:
    label: str
    data: str  # callback data, "<version>:<key>"


@dataclass(frozen=True)
class Send:
    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()  # inline keyboard rows
    ask_contact: str = ""  # label of a reply-keyboard button that shares the user's own phone number
    remove_keyboard: bool = False  # take the reply keyboard (the contact button) away
    track_version: int | None = None  # this message carries the live keyboard of that chat version


@dataclass(frozen=True)
class Edit:
    message_id: int
    text: str | None = None  # None: only remove the inline keyboard


@dataclass(frozen=True)
class AnswerButton:
    """answerCallbackQuery: stops the button's spinner, optionally with a short toast."""

    callback_id: str
    text: str = ""


Action = Send | Edit | AnswerButton


# --- where chats and accounts live -----------------------------------------------------------


class ChatRow(Protocol):
    chat_id: int
    user_id: int
    state: dict | None  # core.dialogue.types.DialogueState as JSON
    version: int
    last_message_id: int | None
    payment_id: str | None


class ChatStore(Protocol):
    async def get(self, chat_id: int) -> ChatRow | None: ...

    async def save(self, chat_id: int, *, user_id: int, state: dict, payment_id: str | None,
                   expected_version: int, now: datetime) -> bool:
        """Store the next state at `expected_version + 1` (0: first row); False if another update won."""
        ...

    async def set_message(self, chat_id: int, *, version: int, message_id: int) -> None: ...


class Account(Protocol):
    tenant_id: str
    phone: str
    name: str
    language: str


class Accounts(Protocol):
    async def find(self, user_id: int) -> Account | None: ...

    async def link(self, *, user_id: int, chat_id: int, phone: str, name: str, language: str,
                   now: datetime) -> Account: ...


@dataclass
class BotDeps:
    chats: ChatStore
    accounts: Accounts
    uow: Callable[[], UnitOfWork]
    limits: PaymentLimits
    clock: Clock
    history: PaymentHistory
    balance_reader: MeterBalanceReader | None = None
    on_payment_started: Callable[[], None] | None = None
