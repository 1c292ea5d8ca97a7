"""The bot's own vocabulary, free of python-telegram-bot: what came in (`Incoming`) and what to do about
it (`Send`, `Edit`, `AnswerButton`). bot.conversation decides, bot.telegram_io translates. Where chats
and accounts are kept is a port (core.ports.TelegramChatStore, TelegramAccounts)."""

from __future__ import annotations

from dataclasses import dataclass

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
