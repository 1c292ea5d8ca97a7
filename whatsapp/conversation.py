"""The WhatsApp room's side of a conversation: the purchase dialogue (core.dialogue, the same one USSD
and Telegram run), one message or button at a time.

Free of HTTP: `Conversation.handle` takes an `Incoming` and returns the messages to send (Cloud API
message objects, see whatsapp.render). What it adds to the dialogue is WhatsApp's:
- the sender's wa_id is their phone, so a tenant is recognised at once; numbers outside Kenya are told
  politely that LipaMeter is for Kenyan M-Pesa numbers;
- each incoming message is claimed by its id first (Meta retries deliveries), then rate-limited per
  number (counted in the database, so across replicas): a flood is answered with silence;
- buttons carry the chat's screen version, so a tap on an older message is answered and never acted
  on; two replicas handling one tap race on `save(expected_version=…)`, and the payment they may both
  start shares one idempotency key (`wa:<the confirm message's id>`), so it is started once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from core.dialogue import machine as dialogue
from core.dialogue import texts
from core.dialogue.runner import DialogueRunner
from core.dialogue.screens import BACK, BUY_METERS, HOME, MORE, goodbye
from core.dialogue.service import ChannelRules, DialogueDeps
from core.dialogue.sessions import WhatsAppChat
from core.dialogue.types import Caller, DialogueState, Step
from core.payments.model import Channel
from core.ports import WhatsAppChatStore
from core.shared.errors import InvalidInput
from core.shared.phone import mask_phone, normalize_kenyan_mobile
from whatsapp import texts as wa_texts
from whatsapp.inbound import Incoming
from whatsapp.render import MENU, parse_id, render, text_message

log = logging.getLogger("lipameter.whatsapp")

# As in Telegram: the STK push goes out at once, a live balance may take a few seconds, /history shows five.
WHATSAPP_RULES = ChannelRules(channel=Channel.WHATSAPP, balance_timeout_s=5.0, push_delay_s=0.0, history_lines=5)
RATE_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class WhatsAppDeps:
    """The shared dialogue deps plus what only WhatsApp has: where chats are kept, how much one number may send."""

    dialogue: DialogueDeps
    chats: WhatsAppChatStore
    max_per_minute: int = 20  # a person tapping fast sends far fewer; beyond it, silence


def _typed_meter(text: str, state: DialogueState) -> bool:
    keys = {str(i) for i in range(1, len(state.choices) + 2)} | {BACK, HOME, MORE}
    return text not in keys and bool(dialogue.METER_NUMBER.match(text))


class Conversation:
    def __init__(self, deps: WhatsAppDeps) -> None:
        self.deps = deps
        self.runner = DialogueRunner(deps.dialogue, WHATSAPP_RULES)

    async def handle(self, incoming: Incoming) -> list[dict]:
        """The messages to send back to `incoming.wa_id` (none for a repeat or a flood)."""
        now = self.deps.dialogue.clock.now()
        if not await self.deps.chats.claim_message(incoming.message_id, wa_id=incoming.wa_id, at=now):
            log.info("whatsapp message %s already handled", incoming.message_id)
            return []
        if await self.deps.chats.recent_messages(incoming.wa_id, since=now - RATE_WINDOW) > self.deps.max_per_minute:
            log.warning("whatsapp: %s sends too fast; not answering", mask_phone(incoming.wa_id))
            return []
        try:
            phone = normalize_kenyan_mobile("+" + incoming.wa_id)
        except InvalidInput:
            return [text_message(texts.BILINGUAL_NOT_KENYAN)]
        chat = await self.deps.chats.get(incoming.wa_id)
        state = self._state(chat)
        caller = await self.runner.caller(phone, payment_key=None)
        language = state.language if state else wa_texts.language_of(caller.language)
        if incoming.kind == "reply":
            return await self._on_reply(incoming, chat, state, phone, language)
        if incoming.kind != "text":
            return [text_message(wa_texts.text(language, "not_text"))]
        return await self._on_text(incoming, chat, state, phone, language)

    def _state(self, chat: WhatsAppChat | None) -> DialogueState | None:
        return self.runner.restore(chat.state, where=f"whatsapp chat {mask_phone(chat.wa_id)}") if chat else None

    async def _on_text(self, incoming: Incoming, chat: WhatsAppChat | None, state: DialogueState | None,
                       phone: str, language: str) -> list[dict]:
        text = incoming.text.strip()
        word = text.lower()[:20]
        if word in wa_texts.HELP_WORDS:
            return [text_message(wa_texts.text(language, "help"))]
        if word in wa_texts.CANCEL_WORDS:
            return await self._cancel(incoming, chat, state, phone, language)
        first = chat is None or chat.state is None
        if word in wa_texts.MENU_WORDS or word in wa_texts.ENTRY_WORDS or state is None or state.ended:
            greeting = [text_message(wa_texts.text(language, "greet", phone=texts.local_phone(phone)))] if first else []
            return greeting + await self._start(incoming, chat, phone, entry=wa_texts.ENTRY_WORDS.get(word))
        caller = await self._caller(phone, incoming, chat)
        if state.frame.screen == BUY_METERS and _typed_meter(text, state):
            # A meter number typed under the meter list: as if "Other meter" was chosen first.
            other = dialogue.handle(state, str(len(state.choices) + 1), caller)
            return await self._advance(dialogue.handle(other.state, text, caller), caller, incoming, chat)
        return await self._advance(dialogue.handle(state, text, caller), caller, incoming, chat)

    async def _on_reply(self, incoming: Incoming, chat: WhatsAppChat | None, state: DialogueState | None,
                        phone: str, language: str) -> list[dict]:
        parsed = parse_id(incoming.reply_id)
        if parsed is None or chat is None or state is None or parsed[0] != chat.version:
            # A double tap, or a button on an older message: answered, never acted on.
            return [text_message(wa_texts.text(language, "stale"))]
        key = parsed[1]
        if key == MENU or state.ended:
            return await self._start(incoming, chat, phone)
        caller = await self._caller(phone, incoming, chat)
        return await self._advance(dialogue.handle(state, key, caller), caller, incoming, chat)

    async def _start(self, incoming: Incoming, chat: WhatsAppChat | None, phone: str, *,
                     entry: str | None = None) -> list[dict]:
        caller = await self._caller(phone, incoming, chat)
        step = dialogue.start(caller)
        if entry is not None:
            step = dialogue.handle(step.state, entry, caller)
        return await self._advance(step, caller, incoming, chat)

    async def _cancel(self, incoming: Incoming, chat: WhatsAppChat | None, state: DialogueState | None,
                      phone: str, language: str) -> list[dict]:
        if state is None or state.ended:
            return [text_message(wa_texts.text(language, "nothing_to_cancel"))]
        step = Step(state=state.model_copy(update={"ended": True}), screen=goodbye(state.language, "cancelled"))
        return await self._advance(step, await self._caller(phone, incoming, chat), incoming, chat)

    async def _advance(self, step: Step, caller: Caller, incoming: Incoming, chat: WhatsAppChat | None) -> list[dict]:
        """Perform the step's effects, store the new state, and say what to send."""
        step = await self.runner.drive(step, caller)
        expected = chat.version if chat else 0
        saved = await self.deps.chats.save(incoming.wa_id, state=step.state.model_dump(mode="json"),
                                           payment_id=step.state.payment_id, expected_version=expected,
                                           now=self.deps.dialogue.clock.now())
        if not saved:  # another message of this number (another replica) answered first
            log.info("whatsapp chat %s: a concurrent message overtook this one", mask_phone(incoming.wa_id))
            return []
        return [render(step.screen, state=step.state, caller=caller, version=expected + 1)]

    async def _caller(self, phone: str, incoming: Incoming, chat: WhatsAppChat | None) -> Caller:
        # A tapped button names the message it was on (context.id): Meta's id for our confirm message, the
        # same for a double tap or two replicas. A typed "1" has the chat's screen version instead.
        if incoming.kind == "reply" and incoming.context_id:
            key = f"wa:{incoming.context_id}"
        else:
            key = f"wa:{incoming.wa_id}:v{chat.version if chat else 0}"
        return await self.runner.caller(phone, payment_key=key[:128])
