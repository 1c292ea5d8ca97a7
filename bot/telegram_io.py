"""python-telegram-bot at the edges: a Telegram Update in as an `Incoming`, the conversation's actions
out as Bot API calls. Everything the bot decides is in bot.conversation; this file only translates."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application, BaseUpdateProcessor, ContextTypes, TypeHandler

from bot import texts as bot_texts
from bot.actions import Action, AnswerButton, Edit, Incoming, Send
from bot.conversation import Conversation
from core.ports import TelegramChatStore

log = logging.getLogger("lipameter.bot")

MAX_TEXT = 4096  # Telegram's limit for a message


class PerChatProcessor(BaseUpdateProcessor):
    """Updates of different chats run concurrently; those of one chat run in arrival order, so a quick
    double tap is seen as two presses one after the other (the second one stale), not as a race."""

    def __init__(self, max_concurrent_updates: int = 64) -> None:
        super().__init__(max_concurrent_updates)
        self._chats: dict[int, list[Any]] = {}  # chat id -> [lock, updates holding or waiting for it]

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        entry = self._chats.setdefault(chat.id, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                await coroutine
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._chats.pop(chat.id, None)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def incoming_from(update: Update) -> Incoming | None:
    """None for what the bot ignores (edited messages, channel posts, messages without a sender)."""
    if update.callback_query is not None:
        return _from_button(update.callback_query)
    message = update.message
    if message is None or message.from_user is None:
        return None
    user = message.from_user
    base = dict(chat_id=message.chat.id, user_id=user.id, first_name=(user.first_name or "")[:64],
                language_code=user.language_code or "")
    if message.chat.type != ChatType.PRIVATE:
        return Incoming(kind="group", text=message.text or "", **base)
    if message.contact is not None:
        return Incoming(kind="contact", contact_user_id=message.contact.user_id,
                        contact_phone=message.contact.phone_number or "", **base)
    if message.text is not None:
        return Incoming(kind="text", text=message.text, **base)
    return Incoming(kind="other", **base)


def _from_button(query: CallbackQuery) -> Incoming | None:
    message = query.message
    if message is None:  # a button under an inline-mode message: we never send those
        return None
    user = query.from_user
    text, label = "", ""
    if isinstance(message, Message):  # not an InaccessibleMessage (too old for Telegram to show us)
        text = message.text or ""
        rows = message.reply_markup.inline_keyboard if message.reply_markup else ()
        label = next((b.text for row in rows for b in row if b.callback_data == query.data), "")
    private = message.chat.type == ChatType.PRIVATE
    return Incoming(chat_id=message.chat.id, user_id=user.id, kind="button" if private else "group",
                    first_name=(user.first_name or "")[:64], language_code=user.language_code or "",
                    button=query.data or "", callback_id=query.id, message_id=message.message_id,
                    message_text=text, button_label=label)


def markup_of(send: Send):
    if send.buttons:
        return InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.data) for b in row]
                                     for row in send.buttons])
    if send.ask_contact:
        return ReplyKeyboardMarkup([[KeyboardButton(send.ask_contact, request_contact=True)]],
                                   resize_keyboard=True, one_time_keyboard=True)
    if send.remove_keyboard:
        return ReplyKeyboardRemove()
    return None


async def perform(bot: Bot, chats: TelegramChatStore, incoming: Incoming, actions: list[Action]) -> None:
    """Carry the actions out in order. A refused edit (already edited, too old) does not stop the
    rest; a user who blocked the bot does."""
    for action in actions:
        try:
            await _perform_one(bot, chats, incoming.chat_id, action)
        except Forbidden:
            log.info("telegram chat %s: the user blocked the bot", incoming.chat_id)
            return
        except BadRequest as error:
            log.info("telegram refused %s in chat %s: %s", type(action).__name__, incoming.chat_id, error.message)
        except TelegramError as error:  # network trouble: the user can press again or send /start
            log.warning("telegram %s in chat %s failed: %s", type(action).__name__, incoming.chat_id,
                        type(error).__name__)


async def _perform_one(bot: Bot, chats: TelegramChatStore, chat_id: int, action: Action) -> None:
    if isinstance(action, AnswerButton):
        await bot.answer_callback_query(action.callback_id, text=action.text[:200] or None)
    elif isinstance(action, Edit):
        if action.text is None:
            await bot.edit_message_reply_markup(chat_id=chat_id, message_id=action.message_id, reply_markup=None)
        else:
            await bot.edit_message_text(action.text[:MAX_TEXT], chat_id=chat_id, message_id=action.message_id)
    else:
        markup = markup_of(action)
        sent = await bot.send_message(chat_id, action.text[:MAX_TEXT], reply_markup=markup)
        if action.track_version is not None and isinstance(markup, InlineKeyboardMarkup):
            await chats.set_message(chat_id, version=action.track_version, message_id=sent.message_id)


def install(application: Application, conversation: Conversation) -> None:
    """One handler for every update: the conversation decides; python-telegram-bot only delivers."""

    async def on_update(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        try:
            incoming = incoming_from(update)
        except Exception:  # a strange but well-formed update: nothing we can answer
            log.warning("telegram update %s not understood", update.update_id, exc_info=True)
            return
        if incoming is None:
            return
        try:
            actions = await conversation.handle(incoming)
        except Exception:  # the user gets a polite line; we get the traceback
            log.exception("telegram update %s failed", update.update_id)
            language = bot_texts.language_of(None, incoming.language_code)
            actions = [AnswerButton(incoming.callback_id)] if incoming.callback_id else []
            actions.append(Send(bot_texts.text(language, "trouble")))
        await perform(context.bot, conversation.deps.chats, incoming, actions)

    application.add_handler(TypeHandler(Update, on_update))
