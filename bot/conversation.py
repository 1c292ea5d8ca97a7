"""The bot's side of a Telegram chat: link the user by their phone contact, then run the purchase
dialogue (core.dialogue.machine, the same one USSD runs) one message or button at a time.

Free of python-telegram-bot: `Conversation.handle` takes an `Incoming` and returns the actions to take
(bot.telegram_io performs them). The dialogue itself runs in core.dialogue.runner; what this module adds
is Telegram's: linking, commands, buttons, and the chat row (core.ports.TelegramChatStore) holding the
dialogue state and a version that every new screen increments. Buttons carry the version they were
drawn at, so:
- a press on an older message (a double tap, a second device, a message from before a restart) is
  answered politely and never acted on;
- two replicas handling the same press race on `save(expected_version=…)`; the payment they may both
  start shares one idempotency key (`tg:<chat>:<message>`), so it is started once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

from bot import texts as bot_texts
from bot.actions import Action, AnswerButton, Edit, Incoming, Send
from bot.render import MENU, parse_data, render
from core.dialogue import machine as dialogue
from core.dialogue.runner import DialogueRunner
from core.dialogue.screens import BACK, BUY_METERS, HOME, MORE, goodbye
from core.dialogue.service import ChannelRules, DialogueDeps
from core.dialogue.sessions import TelegramAccount, TelegramChat
from core.dialogue.texts import local_phone
from core.dialogue.types import Caller, DialogueState, Step
from core.payments.model import Channel
from core.ports import TelegramAccounts, TelegramChatStore
from core.shared.errors import InvalidInput
from core.shared.phone import mask_phone, normalize_kenyan_mobile

log = logging.getLogger("lipameter.bot")

# The STK push goes out at once: unlike a USSD session, a chat does not hide the M-Pesa prompt. A chat
# can wait longer than a USSD hop for a live meter reading, and /history shows more than a USSD screen.
TELEGRAM_RULES = ChannelRules(channel=Channel.TELEGRAM, balance_timeout_s=5.0, push_delay_s=0.0, history_lines=5)
COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{1,64})?(?:\s|$)")
BUY_ALERT_DATA, BUY_ENTRY = "buy", "1"  # gateways/telegram.py BUY_DATA: a Buy button on a low-balance alert
COMMAND_ENTRIES = {"buy": "1", "balance": "2", "history": "3", "language": "4"}  # main-menu keys


def command_of(text: str) -> str | None:
    """`/start`, `/Start@LipaMeterBot now` -> `start` (Telegram's bot_command shape); None otherwise."""
    match = COMMAND.match(text)
    return match.group(1).lower() if match else None


def _typed_meter(text: str, state: DialogueState) -> bool:
    keys = {str(i) for i in range(1, len(state.choices) + 2)} | {BACK, HOME, MORE}
    return text not in keys and bool(dialogue.METER_NUMBER.match(text))


@dataclass(frozen=True)
class BotDeps:
    """The shared dialogue deps plus what only the bot has: where chats and accounts are kept."""

    dialogue: DialogueDeps
    chats: TelegramChatStore
    accounts: TelegramAccounts


class Conversation:
    def __init__(self, deps: BotDeps) -> None:
        self.deps = deps
        self.runner = DialogueRunner(deps.dialogue, TELEGRAM_RULES)

    def _state(self, chat: TelegramChat | None) -> DialogueState | None:
        return self.runner.restore(chat.state, where=f"telegram chat {chat.chat_id}") if chat else None

    async def handle(self, incoming: Incoming) -> list[Action]:
        if incoming.kind == "group":
            return self._group(incoming)
        account = await self.deps.accounts.find(incoming.user_id)
        language = bot_texts.language_of(account.language if account else None, incoming.language_code)
        if incoming.kind == "contact":
            return await self._on_contact(incoming, language)
        if account is None:
            return self._unlinked(incoming, language)
        chat = await self.deps.chats.get(incoming.chat_id)
        language = (self._state(chat) or account).language
        if incoming.kind == "button":
            return await self._on_button(incoming, account, chat, language)
        if incoming.kind != "text":
            return [Send(bot_texts.text(language, "not_text"))]
        command = command_of(incoming.text)
        if command is None:
            return await self._on_text(incoming, account, chat)
        return await self._on_command(command, incoming, account, chat, language)

    # --- before the user is linked ------------------------------------------------------------

    def _group(self, incoming: Incoming) -> list[Action]:
        if incoming.callback_id:
            return [AnswerButton(incoming.callback_id, bot_texts.text("en", "private_only"))]
        if command_of(incoming.text):
            return [Send(bot_texts.text(bot_texts.language_of(None, incoming.language_code), "private_only"))]
        return []  # a group's chatter is not for us

    def _unlinked(self, incoming: Incoming, language: str) -> list[Action]:
        ask = bot_texts.text(language, "share_button")
        command = command_of(incoming.text) if incoming.kind == "text" else None
        actions: list[Action] = [AnswerButton(incoming.callback_id)] if incoming.callback_id else []
        if command == "help":
            return actions + [Send(bot_texts.text(language, "help"))]
        key = "greet" if command == "start" else "link_first"
        return actions + [Send(bot_texts.text(language, key), ask_contact=ask)]

    async def _on_contact(self, incoming: Incoming, language: str) -> list[Action]:
        ask = bot_texts.text(language, "share_button")
        # Telegram fills contact.user_id only for a Telegram user's card; the share button sends the
        # sender's own. Anything else (a forwarded or typed-in contact) proves nothing about the phone.
        if incoming.contact_user_id is None or incoming.contact_user_id != incoming.user_id:
            return [Send(bot_texts.text(language, "foreign_contact"), ask_contact=ask)]
        try:
            phone = normalize_kenyan_mobile(incoming.contact_phone)
        except InvalidInput:
            return [Send(bot_texts.text(language, "not_kenyan"), ask_contact=ask)]
        account = await self.deps.accounts.link(user_id=incoming.user_id, chat_id=incoming.chat_id, phone=phone,
                                                name=incoming.first_name, language=language,
                                                now=self.deps.dialogue.clock.now())
        log.info("telegram user linked to %s", mask_phone(phone))
        name = f", {account.name}" if account.name else ""
        linked = Send(bot_texts.text(account.language, "linked", name=name, phone=local_phone(phone)),
                      remove_keyboard=True)
        chat = await self.deps.chats.get(incoming.chat_id)
        return [linked] + await self._start(incoming, account, chat)

    # --- the dialogue ---------------------------------------------------------------------------

    async def _on_command(self, command: str, incoming: Incoming, account: TelegramAccount,
                          chat: TelegramChat | None, language: str) -> list[Action]:
        if command == "start":
            name = f", {account.name}" if account.name else ""
            return await self._start(incoming, account, chat,
                                     notice=bot_texts.text(account.language, "welcome_back", name=name))
        if command in COMMAND_ENTRIES:
            return await self._start(incoming, account, chat, entry=COMMAND_ENTRIES[command])
        if command == "cancel":
            return await self._cancel(incoming, account, chat, language)
        if command == "help":
            return [Send(bot_texts.text(language, "help"))]
        return [Send(bot_texts.text(language, "unknown_command", command="/" + command))]

    async def _on_text(self, incoming: Incoming, account: TelegramAccount, chat: TelegramChat | None) -> list[Action]:
        state = self._state(chat)
        if state is None or state.ended:
            return await self._start(incoming, account, chat)
        caller = await self._caller(account, incoming, chat)
        text = incoming.text.strip()
        if state.frame.screen == BUY_METERS and _typed_meter(text, state):
            # A meter number typed under the meter buttons: as if "Other meter" was pressed first.
            other = dialogue.handle(state, str(len(state.choices) + 1), caller)
            return await self._advance(dialogue.handle(other.state, text, caller), caller, incoming, chat)
        return await self._advance(dialogue.handle(state, text, caller), caller, incoming, chat)

    async def _on_button(self, incoming: Incoming, account: TelegramAccount, chat: TelegramChat | None,
                         language: str) -> list[Action]:
        parsed = parse_data(incoming.button)
        state = self._state(chat)
        if incoming.button == BUY_ALERT_DATA:  # a low-balance alert's Buy button: a fresh purchase
            return await self._start(incoming, account, chat, entry=BUY_ENTRY)
        if parsed is None or chat is None or parsed[0] != chat.version or state is None:
            actions: list[Action] = [AnswerButton(incoming.callback_id, bot_texts.text(language, "stale"))]
            if incoming.message_id is not None and (chat is None or incoming.message_id != chat.last_message_id):
                actions.append(Edit(incoming.message_id))  # its keyboard is of no use any more
            return actions
        key = parsed[1]
        if key == MENU or state.ended:
            return await self._start(incoming, account, chat)
        caller = await self._caller(account, incoming, chat)
        return await self._advance(dialogue.handle(state, key, caller), caller, incoming, chat)

    async def _start(self, incoming: Incoming, account: TelegramAccount, chat: TelegramChat | None, *,
                     entry: str | None = None, notice: str | None = None) -> list[Action]:
        caller = await self._caller(account, incoming, chat)
        step = dialogue.start(caller)
        if entry is not None:
            step = dialogue.handle(step.state, entry, caller)
        return await self._advance(step, caller, incoming, chat, notice=notice)

    async def _cancel(self, incoming: Incoming, account: TelegramAccount, chat: TelegramChat | None,
                      language: str) -> list[Action]:
        state = self._state(chat)
        if state is None or state.ended:
            return [Send(bot_texts.text(language, "nothing_to_cancel"))]
        step = Step(state=state.model_copy(update={"ended": True}), screen=goodbye(state.language, "cancelled"))
        return await self._advance(step, await self._caller(account, incoming, chat), incoming, chat)

    async def _advance(self, step: Step, caller: Caller, incoming: Incoming, chat: TelegramChat | None, *,
                       notice: str | None = None) -> list[Action]:
        """Perform the step's effects, store the new state, and say what to send."""
        step = await self.runner.drive(step, caller)
        screen = replace(step.screen, notice=notice) if notice else step.screen
        expected = chat.version if chat else 0
        saved = await self.deps.chats.save(
            incoming.chat_id, user_id=incoming.user_id, state=step.state.model_dump(mode="json"),
            payment_id=step.state.payment_id, expected_version=expected, now=self.deps.dialogue.clock.now())
        if not saved:  # another update of this chat (another replica) answered first
            log.info("telegram chat %s: a concurrent update overtook this one", incoming.chat_id)
            stale = bot_texts.text(step.state.language, "stale")
            return [AnswerButton(incoming.callback_id, stale)] if incoming.callback_id else []
        actions: list[Action] = []
        if incoming.callback_id:
            actions.append(AnswerButton(incoming.callback_id))
            if incoming.message_id is not None:  # keep what was chosen, drop the keyboard
                chosen = f"{incoming.message_text}\n\n\u00bb {incoming.button_label}" if incoming.message_text else None
                actions.append(Edit(incoming.message_id, chosen))
        if chat is not None and chat.last_message_id and chat.last_message_id != incoming.message_id:
            actions.append(Edit(chat.last_message_id))  # only the newest message keeps buttons
        actions.append(render(screen, state=step.state, caller=caller, version=expected + 1))
        return actions

    async def _caller(self, account: TelegramAccount, incoming: Incoming, chat: TelegramChat | None) -> Caller:
        # The confirm message's id makes the payment's idempotency key: unique in the chat for ever,
        # and the same for a double tap or for two replicas handling one press.
        message = incoming.message_id or (chat.last_message_id if chat else None)
        key = f"tg:{incoming.chat_id}:{message}" if message else f"tg:{incoming.chat_id}:v{chat.version if chat else 0}"
        return await self.runner.caller(account.phone, payment_key=key)
