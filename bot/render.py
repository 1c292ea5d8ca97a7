"""A dialogue Screen as a Telegram message: text plus an inline keyboard.

Every button's callback data is `<version>:<key>`: the key is what a USSD user would type (`1`, `0`,
`00`, an amount), the version is the chat's screen counter when the message was sent, so a press on
any older message is recognised as stale (bot.conversation). Telegram allows 64 bytes of callback data.
"""

from __future__ import annotations

import re

from bot import texts as bot_texts
from bot.actions import Button, Send
from core.dialogue import texts
from core.dialogue.types import Caller, DialogueState, Screen

AMOUNT_PICKS = (100, 200, 500, 1000)  # KES: quick picks on the amount screen; any amount may be typed
MENU = "menu"  # a fresh main menu, offered under the last message of a finished conversation
PAIR_LABEL = 16  # two short options (Pay now / Cancel, English / Kiswahili) share a row
_DATA = re.compile(r"^(\d{1,9}):([0-9]{1,7}|menu)$")
# Goodbyes whose USSD wording speaks of dialling, or that can say more in a chat.
_REWORDED = {"bye_started": "started", "bye_pending": "pending", "bye_too_many": "too_many", "bye_expired": "expired"}


def parse_data(data: str) -> tuple[int, str] | None:
    """(version, key) from a button's callback data; None for anything we did not send."""
    match = _DATA.match(data or "")
    return (int(match.group(1)), match.group(2)) if match else None


def render(screen: Screen, *, state: DialogueState, caller: Caller, version: int) -> Send:
    language = state.language
    parts = [f"\u26a0\ufe0f {screen.error}" if screen.error else "", f"\u2705 {screen.notice}" if screen.notice else "",
             _title(screen, state, caller), *(line.text for line in screen.lines)]
    text = "\n".join(part for part in parts if part)
    if screen.end:
        return Send(text, ((Button(bot_texts.text(language, "menu"), f"{version}:{MENU}"),),), track_version=version)
    return Send(text, _keyboard(screen, caller, version), track_version=version)


def _title(screen: Screen, state: DialogueState, caller: Caller) -> str:
    key = _REWORDED.get(screen.name)
    if key is None:
        return screen.title
    if key == "started":
        frame = state.frame
        if frame.meter is None or frame.amount is None:
            return screen.title
        return bot_texts.text(state.language, key, amount=texts.kes(frame.amount), number=frame.meter.number,
                              phone=texts.local_phone(frame.payer or caller.phone))
    return bot_texts.text(state.language, key)


def _keyboard(screen: Screen, caller: Caller, version: int) -> tuple[tuple[Button, ...], ...]:
    def button(key: str, label: str) -> Button:
        return Button(label, f"{version}:{key}")

    options = [button(option.key, option.label) for option in screen.options]
    if len(options) == 2 and all(len(b.label) <= PAIR_LABEL for b in options):
        rows = [tuple(options)]
    else:
        rows = [(b,) for b in options]
    if screen.expects == "amount":
        picks = [a for a in AMOUNT_PICKS if caller.min_amount <= a <= caller.max_amount]
        if picks:
            rows.append(tuple(button(str(a), texts.kes(a)) for a in picks))
    if screen.nav:
        rows.append(tuple(button(option.key, option.label) for option in screen.nav))
    return tuple(rows)
