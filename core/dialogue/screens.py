"""Screens of the purchase dialogue: each frame of the state, drawn in the caller's language.

Pure functions of (state, caller). List screens also return the state with the meters they offered
(`choices`), so that the next input picks exactly what was on screen even if the list changed since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal

from core.dialogue import texts
from core.dialogue.types import Caller, DialogueState, Line, MeterChoice, Option, Screen

MAIN = "main"
BUY_METERS = "buy_meters"
BUY_NUMBER = "buy_number"
BUY_AMOUNT = "buy_amount"
BUY_CONFIRM = "buy_confirm"
BUY_PAYER = "buy_payer"  # another M-Pesa number to pay from (a relative paying, or a non-Safaricom caller)
BALANCE_METERS = "balance_meters"
BALANCE_NONE = "balance_none"
BALANCE = "balance"
PAYMENTS = "payments"
LANGUAGE = "language"
ALERTS = "alerts"  # the caller's low-balance alert for the meter on the balance screen
ALERT_LEVEL = "alert_level"

BACK, HOME, MORE = "0", "00", "98"
OTHER_PAYER = "3"  # on the confirm screen
TO_ALERTS = "2"  # on the balance screen
CHANGE_LEVEL, TOGGLE_ALERTS, AUTOMATIC_LEVEL = "1", "2", "3"  # on the alerts screen
MIN_LEVEL, MAX_LEVEL = 1, 100_000  # a tenant's own alert level, whole units of the meter's balance
PAGE_SIZE = 5


def nav(language: str) -> tuple[Option, ...]:
    return (Option(BACK, texts.text(language, "nav.back")), Option(HOME, texts.text(language, "nav.home")))


def meter_line(language: str, meter: MeterChoice) -> Line:
    label = texts.text(language, "meter_line", number=meter.number, name=meter.name)
    # A long name may be shortened on a small screen; the number, which M-Pesa shows too, may not.
    keep = len(texts.text(language, "meter_line", number=meter.number, name="").rstrip())
    return Line(label, keep=keep)


def page_of(meters: tuple[MeterChoice, ...], page: int) -> tuple[int, tuple[MeterChoice, ...], bool]:
    """(page, its meters, whether more follow); a page past the end (the list shrank) shows the last."""
    last = max(0, (len(meters) - 1) // PAGE_SIZE)
    page = min(max(page, 0), last)
    start = page * PAGE_SIZE
    return page, meters[start:start + PAGE_SIZE], start + PAGE_SIZE < len(meters)


def _main(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    t = state.language
    options = tuple(Option(str(i), texts.text(t, key)) for i, key in
                    enumerate(("menu.buy", "menu.balance", "menu.payments", "menu.language"), start=1))
    return state, Screen(MAIN, texts.text(t, "app"), options=options)


def _meter_list(state: DialogueState, caller: Caller, *, with_other: bool) -> tuple[DialogueState, Screen]:
    t = state.language
    page, shown, more = page_of(caller.meters, state.frame.page)
    options = [Option(str(i), f"{m.number} {m.name}", keep=len(m.number)) for i, m in enumerate(shown, start=1)]
    if with_other:
        options.append(Option(str(len(shown) + 1), texts.text(t, "other_meter")))
    if more:
        options.append(Option(MORE, texts.text(t, "nav.more")))
    state = state.model_copy(update={"choices": shown, "frame": state.frame.model_copy(update={"page": page})})
    return state, Screen(state.frame.screen, texts.text(t, "choose_meter"), options=tuple(options), nav=nav(t))


def _buy_number(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    t = state.language
    return state, Screen(BUY_NUMBER, texts.text(t, "enter_meter"), nav=nav(t), expects="meter_number")


def _buy_amount(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    t = state.language
    title = texts.text(t, "enter_amount", min=texts.thousands(caller.min_amount),
                       max=texts.thousands(caller.max_amount))
    return state, Screen(BUY_AMOUNT, title, lines=(meter_line(t, state.frame.meter),), nav=nav(t), expects="amount")


def _buy_confirm(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    t, frame = state.language, state.frame
    lines = (
        meter_line(t, frame.meter),
        Line(texts.text(t, "amount_line", amount=texts.kes(frame.amount))),
        Line(texts.text(t, "phone_line", phone=texts.local_phone(frame.payer or caller.phone))),
    )
    options = (Option("1", texts.text(t, "pay_now")), Option("2", texts.text(t, "cancel")),
               Option(OTHER_PAYER, texts.text(t, "other_payer")))
    return state, Screen(BUY_CONFIRM, texts.text(t, "confirm"), lines=lines, options=options, nav=nav(t))


def _buy_payer(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    t = state.language
    return state, Screen(BUY_PAYER, texts.text(t, "enter_payer"), nav=nav(t), expects="phone")


def _balance_none(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    return state, Screen(BALANCE_NONE, texts.text(state.language, "no_meters"), nav=nav(state.language))


def _balance(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    t, info = state.language, state.balance
    if info is None or info.amount is None:
        value = texts.text(t, "balance_unknown")
    elif info.live or info.age_s is None:
        value = texts.text(t, "balance_live", amount=texts.kes(info.amount))
    else:
        value = texts.text(t, "balance_old", amount=texts.kes(info.amount), age=texts.age(t, info.age_s))
    lines = [Line(value)]
    if info is not None and info.amount is not None and info.days_left is not None:
        lines.append(Line(texts.days_left(t, info.days_left)))
    if info and caller.paybill:
        # "Pay by Paybill N, account <meter>" names the meter too: it takes the meter line's place. Both may
        # be left out on a full USSD screen: the caller picked the meter on the screen before.
        lines.append(Line(texts.text(t, "paybill", number=caller.paybill, meter=info.meter.number), optional=True))
    elif info:
        line = meter_line(t, info.meter)
        lines.insert(0, replace(line, optional=True))
    options = [Option("1", texts.text(t, "menu.buy"))]
    if info is not None and info.alert is not None:
        options.append(Option(TO_ALERTS, texts.text(t, "menu.alerts")))
    return state, Screen(BALANCE, texts.text(t, "balance"), lines=tuple(lines), options=tuple(options), nav=nav(t))


def alert_status(language: str, alert) -> str:
    if not alert.enabled:
        return texts.text(language, "alert_off")
    level = alert.threshold
    if level is None:  # the meter's level: about two days of its use, so said roughly
        if alert.meter_threshold is None:
            return texts.text(language, "alert_on_auto")
        level = alert.meter_threshold.quantize(Decimal(1) if alert.unit == "KES" else Decimal("0.1"), ROUND_HALF_UP)
    return texts.text(language, "alert_on", level=texts.level(alert.unit, level))


def _alerts(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    t, frame = state.language, state.frame
    alert = state.balance.alert if state.balance is not None else None
    # The meter was named on the screen before: a full USSD screen may leave it out.
    lines = [replace(meter_line(t, frame.meter), optional=True)] if frame.meter else []
    options = []
    if alert is not None:
        lines.append(Line(alert_status(t, alert)))
        options = [Option(CHANGE_LEVEL, texts.text(t, "alert_change")),
                   Option(TOGGLE_ALERTS, texts.text(t, "alert_turn_off" if alert.enabled else "alert_turn_on"))]
        if alert.threshold is not None:
            options.append(Option(AUTOMATIC_LEVEL, texts.text(t, "alert_automatic")))
    return state, Screen(ALERTS, texts.text(t, "alerts"), lines=tuple(lines), options=tuple(options), nav=nav(t))


def level_unit(state: DialogueState) -> str:
    alert = state.balance.alert if state.balance is not None else None
    return alert.unit if alert is not None else "KES"


def _alert_level(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    t = state.language
    title = texts.text(t, "enter_level", unit=level_unit(state), min=texts.thousands(MIN_LEVEL),
                       max=texts.thousands(MAX_LEVEL))
    lines = (meter_line(t, state.frame.meter),) if state.frame.meter else ()
    return state, Screen(ALERT_LEVEL, title, lines=lines, nav=nav(t), expects="level")


def _payments(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    t = state.language
    lines = []
    for p in state.payments:
        # The meter number goes last: on a crowded screen it is what gets shortened, never the status.
        head = f"{texts.short_date(p.at)} {texts.kes(p.amount)} {texts.text(t, 'status.' + p.status)}"
        lines.append(Line(f"{head} {p.meter_number}", keep=len(head)))
    if not lines:
        lines.append(Line(texts.text(t, "no_payments")))
    return state, Screen(PAYMENTS, texts.text(t, "payments"), lines=tuple(lines), nav=nav(t))


def _language(state: DialogueState, caller: Caller) -> tuple[DialogueState, Screen]:
    t = state.language
    options = tuple(Option(str(i), texts.LANGUAGE_NAMES[code]) for i, code in enumerate(texts.LANGUAGES, start=1))
    return state, Screen(LANGUAGE, texts.text(t, "choose_language"), options=options, nav=nav(t))


BUILDERS: dict[str, Callable[[DialogueState, Caller], tuple[DialogueState, Screen]]] = {
    MAIN: _main,
    BUY_METERS: lambda state, caller: _meter_list(state, caller, with_other=True),
    BUY_NUMBER: _buy_number,
    BUY_AMOUNT: _buy_amount,
    BUY_CONFIRM: _buy_confirm,
    BUY_PAYER: _buy_payer,
    BALANCE_METERS: lambda state, caller: _meter_list(state, caller, with_other=False),
    BALANCE_NONE: _balance_none,
    BALANCE: _balance,
    PAYMENTS: _payments,
    LANGUAGE: _language,
    ALERTS: _alerts,
    ALERT_LEVEL: _alert_level,
}


def draw(state: DialogueState, caller: Caller, *, error: str | None = None,
         notice: str | None = None) -> tuple[DialogueState, Screen]:
    state, screen = BUILDERS[state.frame.screen](state, caller)
    return state, replace(screen, error=error, notice=notice) if error or notice else screen


def goodbye(language: str, name: str, **values: object) -> Screen:
    """A last screen: the conversation ends after it."""
    return Screen(f"bye_{name}", texts.text(language, name, **values), end=True)
