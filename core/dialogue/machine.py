"""The purchase dialogue: one channel-agnostic state machine for buying electricity, checking a
balance, seeing recent payments and choosing a language. USSD and Telegram both render it.

Pure: `start`, `handle` and `resume` take a state and an input (or an effect's outcome) and return a
`Step` — the next state and either a screen or an effect. No I/O happens here; the caller performs
effects (see `core.dialogue.runner.DialogueRunner.drive`) and feeds the outcome back:

    step = handle(state, "1", caller)
    while step.effect:
        step = resume(step.state, await perform(step.effect, caller, deps, rules), caller)
    show(step.screen)

`0` goes back, `00` home, `98` shows more meters. A wrong entry re-shows the screen with a short error;
the third in a row ends the conversation politely. Confirming a payment is the only way to money.
"""

from __future__ import annotations

from core.dialogue import texts
from core.dialogue.screens import (
    ALERT_LEVEL,
    ALERTS,
    AUTOMATIC_LEVEL,
    BACK,
    BALANCE,
    BALANCE_METERS,
    BALANCE_NONE,
    BUY_AMOUNT,
    BUY_CONFIRM,
    BUY_METERS,
    BUY_NUMBER,
    BUY_PAYER,
    CHANGE_LEVEL,
    HOME,
    LANGUAGE,
    MAIN,
    MAX_LEVEL,
    MIN_LEVEL,
    MORE,
    OTHER_PAYER,
    PAYMENTS,
    TO_ALERTS,
    TOGGLE_ALERTS,
    draw,
    goodbye,
    level_unit,
    page_of,
)
from core.dialogue.types import (
    AlertSaved,
    BalanceRead,
    Caller,
    DialogueState,
    FindMeter,
    Frame,
    LanguageSaved,
    ListPayments,
    MeterChoice,
    MeterFound,
    Outcome,
    PaymentRequested,
    PaymentsListed,
    ReadBalance,
    SaveAlert,
    SaveLanguage,
    StartPayment,
    Step,
)
from core.meters.model import METER_NUMBER
from core.shared.errors import InvalidInput
from core.shared.money import parse_whole_kes
from core.shared.phone import can_get_stk_prompt, normalize_kenyan_mobile

MAX_WRONG = 3
MAX_HISTORY = 20  # `00` always reaches home, so the oldest frames can go
MAX_INPUT = 40
RECENT_PAYMENTS = 3


def start(caller: Caller) -> Step:
    language = caller.language if caller.language in texts.LANGUAGES else texts.DEFAULT_LANGUAGE
    # Told at once: this line cannot get the M-Pesa prompt (buying will ask for a Safaricom number).
    notice = None if caller.prompt_ok else texts.text(language, "not_safaricom")
    return _show(DialogueState(language=language), caller, notice=notice)


def handle(state: DialogueState, entry: str, caller: Caller) -> Step:
    """The user's next input (a USSD reply, a Telegram message or button)."""
    if state.ended:
        return _end(state, "expired")
    entry = (entry or "").strip()
    if len(entry) > MAX_INPUT:
        return _wrong(state, caller, "err.choice")
    if entry == HOME:
        return _show(state.model_copy(update={"frame": Frame(screen=MAIN), "history": (), "errors": 0}), caller)
    if entry == BACK and state.frame.screen != MAIN:
        previous = state.history[-1] if state.history else Frame(screen=MAIN)
        return _show(state.model_copy(update={"frame": previous, "history": state.history[:-1], "errors": 0}), caller)
    return HANDLERS[state.frame.screen](state, entry, caller)


def resume(state: DialogueState, outcome: Outcome, caller: Caller) -> Step:
    """The outcome of the effect the last step asked for."""
    t = state.language
    if isinstance(outcome, MeterFound):
        if outcome.meter is None:
            return _wrong(state, caller, "err.meter", number=outcome.number)
        if not outcome.active:
            return _wrong(state, caller, "err.meter_off", number=outcome.meter.number)
        return _forward(state, caller, Frame(screen=BUY_AMOUNT, meter=outcome.meter))
    if isinstance(outcome, BalanceRead):
        state = state.model_copy(update={"balance": outcome.balance})
        return _forward(state, caller, Frame(screen=BALANCE, meter=outcome.balance.meter))
    if isinstance(outcome, PaymentsListed):
        state = state.model_copy(update={"payments": outcome.items[:RECENT_PAYMENTS]})
        return _forward(state, caller, Frame(screen=PAYMENTS))
    if isinstance(outcome, PaymentRequested):
        return _payment_answer(state, caller, outcome)
    if isinstance(outcome, AlertSaved):
        return _alert_answer(state, caller, outcome)
    if isinstance(outcome, LanguageSaved):
        language = outcome.language if outcome.language in texts.LANGUAGES else t
        home = state.model_copy(update={"language": language, "frame": Frame(screen=MAIN), "history": (), "errors": 0})
        return _show(home, caller, notice=texts.text(language, "language_saved"))
    raise TypeError(f"unexpected outcome {type(outcome).__name__}")


# --- per-screen input handlers ----------------------------------------------------------------


def _on_main(state: DialogueState, entry: str, caller: Caller) -> Step:
    if entry == "1":
        return _forward(state, caller, Frame(screen=BUY_METERS if caller.meters else BUY_NUMBER))
    if entry == "2":
        if not caller.meters:
            return _forward(state, caller, Frame(screen=BALANCE_NONE))
        if len(caller.meters) == 1:
            return _effect(state, ReadBalance(caller.meters[0]))
        return _forward(state, caller, Frame(screen=BALANCE_METERS))
    if entry == "3":
        return _effect(state, ListPayments(limit=RECENT_PAYMENTS))
    if entry == "4":
        return _forward(state, caller, Frame(screen=LANGUAGE))
    return _wrong(state, caller, "err.choice")


def _picked(state: DialogueState, entry: str) -> MeterChoice | None:
    if entry.isascii() and entry.isdigit() and 1 <= int(entry) <= len(state.choices):
        return state.choices[int(entry) - 1]
    return None


def _next_page(state: DialogueState, caller: Caller) -> Step | None:
    _, _, more = page_of(caller.meters, state.frame.page)
    if not more:
        return None
    return _forward(state, caller, state.frame.model_copy(update={"page": state.frame.page + 1}))


def _on_buy_meters(state: DialogueState, entry: str, caller: Caller) -> Step:
    meter = _picked(state, entry)
    if meter is not None:
        return _forward(state, caller, Frame(screen=BUY_AMOUNT, meter=meter))
    if entry == str(len(state.choices) + 1):
        return _forward(state, caller, Frame(screen=BUY_NUMBER))
    if entry == MORE:
        return _next_page(state, caller) or _wrong(state, caller, "err.choice")
    if _typed_meter_number(entry):
        # A meter number typed where a list is shown (a dialled shortcut `*384*1234*1*A101*500#`
        # carries one): as if "Other meter" was chosen first, so a "not found" shows on that short screen.
        history = (state.history + (state.frame,))[-MAX_HISTORY:]
        other = state.model_copy(update={"frame": Frame(screen=BUY_NUMBER), "history": history, "errors": 0})
        return _effect(other, FindMeter(entry))
    return _wrong(state, caller, "err.choice")


def _typed_meter_number(entry: str) -> bool:
    """Not a list key (one or two digits: 1-6, 98) and shaped like a meter number."""
    return bool(METER_NUMBER.match(entry)) and not (entry.isdigit() and len(entry) <= 2)


def _on_buy_number(state: DialogueState, entry: str, caller: Caller) -> Step:
    if not METER_NUMBER.match(entry):
        return _wrong(state, caller, "err.meter_format")
    return _effect(state, FindMeter(entry))


def _on_buy_amount(state: DialogueState, entry: str, caller: Caller) -> Step:
    try:
        amount = parse_whole_kes(entry, minimum=caller.min_amount, maximum=caller.max_amount)
    except InvalidInput:
        return _wrong(state, caller, "err.amount", min=texts.thousands(caller.min_amount),
                      max=texts.thousands(caller.max_amount))
    if not caller.prompt_ok:  # no prompt can reach this line: ask for a number it can reach first
        frame = Frame(screen=BUY_PAYER, meter=state.frame.meter, amount=amount)
        return _forward(state, caller, frame, notice=texts.text(state.language, "not_safaricom"))
    return _forward(state, caller, Frame(screen=BUY_CONFIRM, meter=state.frame.meter, amount=amount))


def _on_buy_confirm(state: DialogueState, entry: str, caller: Caller) -> Step:
    frame = state.frame
    if entry == "1":
        return _effect(state, StartPayment(meter=frame.meter, amount=frame.amount, payer=frame.payer))
    if entry == "2":
        return _end(state, "cancelled")
    if entry == OTHER_PAYER:
        return _forward(state, caller, Frame(screen=BUY_PAYER, meter=frame.meter, amount=frame.amount))
    return _wrong(state, caller, "err.choice")


def _on_buy_payer(state: DialogueState, entry: str, caller: Caller) -> Step:
    """Another M-Pesa number pays (a relative, or the caller's own Safaricom line): it gets the prompt."""
    try:
        payer = normalize_kenyan_mobile(entry)
    except InvalidInput:
        return _wrong(state, caller, "err.payer")
    if not can_get_stk_prompt(payer):
        return _wrong(state, caller, "err.payer")
    frame = state.frame
    confirm = Frame(screen=BUY_CONFIRM, meter=frame.meter, amount=frame.amount,
                    payer=None if payer == caller.phone else payer)
    return _forward(state, caller, confirm)


def _on_balance_meters(state: DialogueState, entry: str, caller: Caller) -> Step:
    meter = _picked(state, entry)
    if meter is not None:
        return _effect(state, ReadBalance(meter))
    if entry == MORE:
        return _next_page(state, caller) or _wrong(state, caller, "err.choice")
    return _wrong(state, caller, "err.choice")


def _on_balance(state: DialogueState, entry: str, caller: Caller) -> Step:
    if entry == "1" and state.balance is not None:
        return _forward(state, caller, Frame(screen=BUY_AMOUNT, meter=state.balance.meter))
    if entry == TO_ALERTS and state.balance is not None and state.balance.alert is not None:
        return _forward(state, caller, Frame(screen=ALERTS, meter=state.balance.meter))
    return _wrong(state, caller, "err.choice")


def _on_alerts(state: DialogueState, entry: str, caller: Caller) -> Step:
    alert, meter = state.balance.alert if state.balance else None, state.frame.meter
    if alert is None or meter is None:
        return _wrong(state, caller, "err.choice")
    if entry == CHANGE_LEVEL:
        return _forward(state, caller, Frame(screen=ALERT_LEVEL, meter=meter))
    if entry == TOGGLE_ALERTS:
        return _effect(state, SaveAlert(meter=meter, enabled=not alert.enabled))
    if entry == AUTOMATIC_LEVEL and alert.threshold is not None:
        return _effect(state, SaveAlert(meter=meter, automatic=True))
    return _wrong(state, caller, "err.choice")


def _on_alert_level(state: DialogueState, entry: str, caller: Caller) -> Step:
    """A whole number in the meter's unit, typed like an amount (ASCII digits, no decimals)."""
    try:
        level = parse_whole_kes(entry, minimum=MIN_LEVEL, maximum=MAX_LEVEL)
    except InvalidInput:
        return _wrong(state, caller, "err.level", unit=level_unit(state), min=texts.thousands(MIN_LEVEL),
                      max=texts.thousands(MAX_LEVEL))
    # Setting a level also turns alerts back on: that is what someone typing one wants.
    return _effect(state, SaveAlert(meter=state.frame.meter, enabled=True, threshold=level))


def _on_language(state: DialogueState, entry: str, caller: Caller) -> Step:
    if entry.isascii() and entry.isdigit() and 1 <= int(entry) <= len(texts.LANGUAGES):
        return _effect(state, SaveLanguage(texts.LANGUAGES[int(entry) - 1]))
    return _wrong(state, caller, "err.choice")


def _nothing_to_pick(state: DialogueState, entry: str, caller: Caller) -> Step:
    return _wrong(state, caller, "err.choice")


HANDLERS = {
    MAIN: _on_main,
    BUY_METERS: _on_buy_meters,
    BUY_NUMBER: _on_buy_number,
    BUY_AMOUNT: _on_buy_amount,
    BUY_CONFIRM: _on_buy_confirm,
    BUY_PAYER: _on_buy_payer,
    BALANCE_METERS: _on_balance_meters,
    BALANCE_NONE: _nothing_to_pick,
    BALANCE: _on_balance,
    PAYMENTS: _nothing_to_pick,
    LANGUAGE: _on_language,
    ALERTS: _on_alerts,
    ALERT_LEVEL: _on_alert_level,
}


# --- moving between screens -------------------------------------------------------------------


def _show(state: DialogueState, caller: Caller, *, error: str | None = None, notice: str | None = None) -> Step:
    state, screen = draw(state, caller, error=error, notice=notice)
    return Step(state=state, screen=screen)


def _forward(state: DialogueState, caller: Caller, frame: Frame, *, notice: str | None = None) -> Step:
    history = (state.history + (state.frame,))[-MAX_HISTORY:]
    return _show(state.model_copy(update={"frame": frame, "history": history, "errors": 0}), caller, notice=notice)


def _effect(state: DialogueState, effect) -> Step:
    return Step(state=state, effect=effect)


def _wrong(state: DialogueState, caller: Caller, key: str, **values: object) -> Step:
    errors = state.errors + 1
    if errors >= MAX_WRONG:
        return _end(state, "too_many")
    return _show(state.model_copy(update={"errors": errors}), caller, error=texts.text(state.language, key, **values))


def _end(state: DialogueState, name: str, **values: object) -> Step:
    return Step(state=state.model_copy(update={"ended": True}), screen=goodbye(state.language, name, **values))


def _payment_answer(state: DialogueState, caller: Caller, outcome: PaymentRequested) -> Step:
    if outcome.ok:
        frame, state = state.frame, state.model_copy(update={"payment_id": outcome.payment_id})
        return _end(state, "started", amount=texts.kes(frame.amount),
                    phone=texts.local_phone(frame.payer or caller.phone), number=frame.meter.number)
    if outcome.code == "payment_pending":
        return _end(state, "pending")
    return _end(state, "not_started")


def _alert_answer(state: DialogueState, caller: Caller, outcome: AlertSaved) -> Step:
    """Back on the alerts screen (from the level screen too), showing the setting as saved."""
    history = state.history[:-1] if state.frame.screen == ALERT_LEVEL and state.history else state.history
    frame = Frame(screen=ALERTS, meter=state.frame.meter)
    if outcome.alert is None:
        state = state.model_copy(update={"frame": frame, "history": history, "errors": 0})
        return _show(state, caller, notice=texts.text(state.language, "alerts_not_saved"))
    balance = state.balance.model_copy(update={"alert": outcome.alert}) if state.balance else None
    state = state.model_copy(update={"frame": frame, "history": history, "errors": 0, "balance": balance})
    return _show(state, caller, notice=texts.text(state.language, "alerts_saved"))
