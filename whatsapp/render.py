"""A dialogue Screen as one WhatsApp Cloud API message (the `type` and its object, without `to`).

- up to three choices: reply buttons (WhatsApp shows at most 3, titles up to 20 characters), with Back
  and Home as far as they fit;
- more: an interactive list (at most 10 rows, titles up to 24 characters, a description up to 72); the
  dialogue pages meters five at a time with a "More" row, so a page always fits;
- the amount screen: three amounts as buttons, any other amount typed;
- a last screen: its text and a "Menu" button.

Every button or row id is `<version>:<key>`: the key is what a USSD user would type, the version is the
chat's screen counter when the message was sent, so a tap on any older message is recognised as stale.
"""

from __future__ import annotations

import re

from core.dialogue import texts
from core.dialogue.screens import BALANCE_METERS, BUY_METERS
from core.dialogue.types import Caller, DialogueState, Option, Screen
from whatsapp import texts as wa_texts

AMOUNT_PICKS = (100, 200, 500)  # KES, as buttons on the amount screen; any amount may be typed
MENU = "menu"
METER_LISTS = (BUY_METERS, BALANCE_METERS)  # meters are always a list, however few: numbers and names fit
MAX_BUTTONS, BUTTON_TITLE = 3, 20
MAX_ROWS, ROW_TITLE, ROW_DESCRIPTION, LIST_BUTTON = 10, 24, 72, 20
MAX_BODY, MAX_TEXT = 1024, 4096
_ID = re.compile(r"^(\d{1,9}):([0-9]{1,7}|menu)$")
_REWORDED = {"bye_started": "started", "bye_pending": "pending", "bye_too_many": "too_many", "bye_expired": "expired"}


def parse_id(reply_id: str) -> tuple[int, str] | None:
    """(version, key) from a button's or row's id; None for anything we did not send."""
    match = _ID.match(reply_id or "")
    return (int(match.group(1)), match.group(2)) if match else None


def text_message(body: str) -> dict:
    return {"type": "text", "text": {"body": body[:MAX_TEXT], "preview_url": False}}


def render(screen: Screen, *, state: DialogueState, caller: Caller, version: int) -> dict:
    language = state.language
    body = body_of(screen, state, caller)
    if screen.end:
        return _buttons(body, [Option(MENU, wa_texts.text(language, "menu"))], version)
    if screen.expects == "amount":
        picks = [Option(str(a), texts.kes(a)) for a in AMOUNT_PICKS if caller.min_amount <= a <= caller.max_amount]
        hint = wa_texts.text(language, "type_hint")
        return _buttons(f"{body}\n\n{hint}", picks, version) if picks else text_message(f"{body}\n\n{hint}")
    if not screen.options and not screen.nav:
        return text_message(body)
    if len(screen.options) <= MAX_BUTTONS and screen.name not in METER_LISTS:
        # Buttons while the choices fit (Pay now, Cancel, Back); "00" typed still reaches the menu.
        nav = screen.nav[:MAX_BUTTONS - len(screen.options)]
        return _buttons(body, [*screen.options, *nav], version)
    choices = [*screen.options, *screen.nav]
    return _list(body, choices[:MAX_ROWS], version, wa_texts.text(language, "choose"))


def body_of(screen: Screen, state: DialogueState, caller: Caller) -> str:
    parts = [f"\u26a0\ufe0f {screen.error}" if screen.error else "", f"\u2705 {screen.notice}" if screen.notice else "",
             _title(screen, state, caller), *(line.text for line in screen.lines)]
    return "\n".join(part for part in parts if part)


def _title(screen: Screen, state: DialogueState, caller: Caller) -> str:
    key = _REWORDED.get(screen.name)
    if key is None:
        return screen.title
    frame = state.frame
    if key == "started":
        if frame.meter is None or frame.amount is None:
            return screen.title
        return wa_texts.text(state.language, key, amount=texts.kes(frame.amount), number=frame.meter.number,
                             phone=texts.local_phone(caller.phone))
    return wa_texts.text(state.language, key)


def _short(label: str, limit: int) -> str:
    return label if len(label) <= limit else label[:limit - 1] + "\u2026"


def _buttons(body: str, options: list[Option], version: int) -> dict:
    buttons = [{"type": "reply", "reply": {"id": f"{version}:{o.key}", "title": _short(o.label, BUTTON_TITLE)}}
               for o in options[:MAX_BUTTONS]]
    return {"type": "interactive", "interactive": {
        "type": "button", "body": {"text": _short(body, MAX_BODY)}, "action": {"buttons": buttons}}}


def _row(option: Option, version: int) -> dict:
    row = {"id": f"{version}:{option.key}", "title": _short(option.label, ROW_TITLE)}
    if len(option.label) > ROW_TITLE and option.keep:
        # A meter: its number as the title (never shortened), its name below.
        row["title"] = _short(option.label[:option.keep], ROW_TITLE)
        row["description"] = _short(option.label[option.keep:].strip(), ROW_DESCRIPTION)
    return row


def _list(body: str, options: list[Option], version: int, button: str) -> dict:
    rows = [_row(option, version) for option in options]
    return {"type": "interactive", "interactive": {
        "type": "list", "body": {"text": _short(body, MAX_BODY)},
        "action": {"button": _short(button, LIST_BUTTON), "sections": [{"title": "LipaMeter", "rows": rows}]}}}
