"""Every USSD screen, in both languages, with worst-case data: <= 160 characters including `CON `/`END `
and the navigation line, plain ASCII, option keys and our own wording intact."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.dialogue import machine as dialogue
from core.dialogue import texts
from core.dialogue.screens import BUILDERS, draw, goodbye
from core.dialogue.types import (
    AlertInfo,
    AlertSaved,
    BalanceInfo,
    BalanceRead,
    Caller,
    DialogueState,
    Frame,
    LanguageSaved,
    Line,
    MeterChoice,
    MeterFound,
    Option,
    PaymentLine,
    PaymentRequested,
    PaymentsListed,
    Screen,
)
from core.payments.model import PaymentStatus
from ussd.render import LIMIT, ascii_only, to_text

# A landlord's idea of a meter name: long, accented, typographic quotes and dashes (120 is the column's limit).
LONG_NAME = ("Nyumba ya Mzee \u2013 Ruaka Heights, Block \u201cC\u201d, Caf\u00e9 floor, d\u00e9j\u00e0 vu "
             "wing, flat no. 1234567890 \u2014 next to the big mango tree")[:120]
METERS = tuple(MeterChoice(number=f"ABCDEFGHIJ{i:02d}", name=LONG_NAME) for i in range(1, 13))
WORST = Caller(phone="254712345678", meters=METERS, min_amount=100_000, max_amount=250_000,
               paybill="9999999")  # the longest Paybill number shows on the balance screen
BIG = Decimal("99999999999999.9999")  # Numeric(18, 4), the meters table's widest balance
WHEN = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
M = METERS[0]

# The re-prompts each screen can show (every screen can say "invalid choice", e.g. to a 41-digit entry).
ERRORS = {
    "buy_number": [("err.meter", {"number": "ABCDEFGHIJKL"}), ("err.meter_format", {}),
                   ("err.meter_off", {"number": "ABCDEFGHIJKL"})],
    "buy_amount": [("err.amount", {"min": "100,000", "max": "250,000"})],
    "buy_payer": [("err.payer", {})],
    "alert_level": [("err.level", {"unit": "KES", "min": "1", "max": "100,000"})],
}
# The widest alert setting: the tenant's own level, as wide as a level can be, in the wider unit name.
ALERT = AlertInfo(enabled=True, threshold=Decimal(100_000), meter_threshold=BIG, unit="KES")
WITH_ALERT = BalanceInfo(meter=M, amount=BIG, age_s=3599, days_left=99, alert=ALERT)


def _states(language: str) -> list[DialogueState]:
    base = DialogueState(language=language)
    frames = [Frame(screen="main"), Frame(screen="buy_number"), Frame(screen="balance_none"), Frame(screen="language"),
              Frame(screen="buy_amount", meter=M), Frame(screen="buy_confirm", meter=M, amount=250_000),
              Frame(screen="payments"), Frame(screen="buy_payer", meter=M, amount=250_000),
              Frame(screen="buy_confirm", meter=M, amount=250_000, payer="254722000111")]
    frames += [Frame(screen=s, page=p) for s in ("buy_meters", "balance_meters") for p in range(3)]
    states = [base.model_copy(update={"frame": f}) for f in frames]
    infos = [BalanceInfo(meter=M, amount=BIG, live=True), BalanceInfo(meter=M, amount=BIG, age_s=99_999 * 86400),
             BalanceInfo(meter=M, amount=BIG, age_s=3599), BalanceInfo(meter=M, amount=None)]
    # Days left (the longest wordings: 2 digits, over 99, less than one) and the alerts option.
    infos += [WITH_ALERT.model_copy(update={"days_left": days}) for days in (0, 1, 99, 10**9)]
    infos += [BalanceInfo(meter=M, amount=None, alert=ALERT.model_copy(update={"enabled": False}))]
    for info in infos:
        states.append(base.model_copy(update={"frame": Frame(screen="balance", meter=M), "balance": info}))
    for alert in (ALERT, ALERT.model_copy(update={"enabled": False}), AlertInfo(meter_threshold=None),
                  AlertInfo(threshold=Decimal("99999.5"), unit="kWh")):
        info = WITH_ALERT.model_copy(update={"alert": alert})
        for screen in ("alerts", "alert_level"):
            states.append(base.model_copy(update={"frame": Frame(screen=screen, meter=M), "balance": info}))
    longest_status = max((s.value for s in PaymentStatus), key=lambda v: len(texts.text(language, "status." + v)))
    for status in {longest_status, *(s.value for s in PaymentStatus)}:
        lines = tuple(PaymentLine(at=WHEN, meter_number="ABCDEFGHIJKL", amount=250_000, status=status)
                      for _ in range(3))
        states.append(base.model_copy(update={"frame": Frame(screen="payments"), "payments": lines}))
    return states


def _goodbyes(language: str) -> list[Screen]:
    values = {"started": {"amount": "KES 250,000", "phone": "0712345678", "number": "ABCDEFGHIJKL"}}
    names = ("started", "cancelled", "pending", "not_started", "too_many", "expired")
    return [goodbye(language, name, **values.get(name, {})) for name in names] + [
        Screen(name="bye", title=message, end=True)
        for message in (texts.BILINGUAL_EXPIRED, texts.BILINGUAL_NOT_KENYAN, texts.BILINGUAL_TROUBLE)]


def every_screen(language: str) -> list[Screen]:
    screens = []
    for state in _states(language):
        for error in [None, ("err.choice", {}), *ERRORS.get(state.frame.screen, [])]:
            message = texts.text(language, error[0], **error[1]) if error else None
            screens.append(draw(state, WORST, error=message)[1])
        if state.frame.screen == "main":
            screens.append(draw(state, WORST, notice=texts.text(language, "language_saved"))[1])
        if state.frame.screen in ("main", "buy_payer"):
            screens.append(draw(state, WORST, notice=texts.text(language, "not_safaricom"))[1])
        if state.frame.screen == "alerts":
            for notice in ("alerts_saved", "alerts_not_saved"):
                screens.append(draw(state, WORST, notice=texts.text(language, notice))[1])
    return screens + _goodbyes(language)


def check(screen: Screen) -> str:
    shown = to_text(screen)
    assert len(shown) <= LIMIT, (len(shown), shown)
    assert shown.isascii() and all(ch == "\n" or ch.isprintable() for ch in shown), shown
    assert shown.startswith("END " if screen.end else "CON ")
    # Our own wording, the keys and the navigation survive; only data (names) may be shortened.
    assert "\n".join(map(ascii_only, screen.title.split("\n"))) in shown, shown
    if screen.error or screen.notice:
        assert shown[4:].startswith((screen.error or screen.notice) + "\n"), shown
    for option in screen.options:
        assert f"\n{option.key}. " in shown, shown
        if option.keep is None:
            assert f"\n{option.key}. {option.label}" in shown, shown
    for line in screen.lines:
        if line.optional and ascii_only(line.text)[:line.keep or 1] not in shown:
            continue  # left out of a full screen
        assert ascii_only(line.text)[:line.keep or len(line.text)] in shown, shown
    if screen.nav:
        assert shown.endswith("\n" + " ".join(f"{o.key}. {o.label}" for o in screen.nav)), shown
    return shown


@pytest.mark.parametrize("language", texts.LANGUAGES)
def test_every_screen_fits_in_both_languages(language):
    screens = every_screen(language)
    assert {s.name for s in screens} >= set(BUILDERS) | {"bye_started", "bye_too_many", "bye_expired"}
    shown = [check(screen) for screen in screens]
    assert any("ABCDEFGHIJ01" in s for s in shown)  # long names were cut, numbers kept
    assert len(shown) > 60


def test_both_languages_say_everything():
    assert texts.EN.keys() == texts.SW.keys()
    assert all(value.isascii() for table in texts.TEXTS.values() for value in table.values())
    assert {f"status.{s.value}" for s in PaymentStatus} <= texts.EN.keys()


def test_ascii_folding():
    assert ascii_only("Caf\u00e9 \u201cA\u201d \u2013 Ruaka\u00a0\u00a0\n\tNo.\u00b71") == 'Cafe "A" - Ruaka No.1'
    assert ascii_only("\u0645\u062a\u0631 \U0001f50c") == ""  # nothing readable survives; no mojibake either


def test_shortening_evens_out_long_names_and_keeps_numbers():
    options = tuple(Option(str(i), f"N{i} " + "x" * 80, keep=2) for i in range(1, 6))
    shown = to_text(Screen(name="t", title="Choose meter:", options=options))
    assert len(shown) == LIMIT
    lengths = {len(line) for line in shown.splitlines()[1:]}
    assert max(lengths) - min(lengths) <= 1 and all(f"{i}. N{i} x" in shown for i in range(1, 6))


def test_a_long_unshortenable_screen_is_still_cut_to_the_limit():
    shown = to_text(Screen(name="t", title="y" * 300, lines=(Line("z" * 50),)))
    assert len(shown) == LIMIT and shown.startswith("CON yyy")


@pytest.mark.parametrize("language", texts.LANGUAGES)
def test_random_walks_only_ever_show_screens_that_fit(language):
    """Thousands of random key presses through the real dialogue, with the worst data behind every effect."""
    rng = random.Random(7)
    vocabulary = ["1", "1", "1", "2", "3", "4", "5", "6", "98", "0", "00", "", "*", "#", "abc", "250000",
                  "100000", "ABCDEFGHIJ03", "NOPE", "9" * 30, "9" * 41]
    outcomes = {
        "FindMeter": lambda e: MeterFound(e.number, METERS[2] if e.number == "ABCDEFGHIJ03" else None),
        "ReadBalance": lambda e: BalanceRead(BalanceInfo(meter=e.meter, amount=BIG, age_s=rng.randrange(10**7),
                                                         days_left=rng.choice([None, 0, 5, 99, 10**6]), alert=ALERT)),
        "ListPayments": lambda e: PaymentsListed(tuple(
            PaymentLine(at=WHEN, meter_number="ABCDEFGHIJKL", amount=250_000, status=rng.choice(list(PaymentStatus)).value)
            for _ in range(3))),
        "StartPayment": lambda e: PaymentRequested(ok=rng.random() < 0.5, code="payment_pending", payment_id="p"),
        "SaveLanguage": lambda e: LanguageSaved(e.language),
        "SaveAlert": lambda e: AlertSaved(None if rng.random() < 0.2 else ALERT.model_copy(update={
            "enabled": e.enabled if e.enabled is not None else True, "threshold": None if e.automatic else ALERT.threshold})),
    }
    seen = set()
    for _ in range(400):
        who = Caller(**{**WORST.__dict__, "language": language, "meters": METERS[:rng.randrange(13)]})
        step = dialogue.start(who)
        while not step.screen.end:
            step = dialogue.handle(step.state, rng.choice(vocabulary), who)
            while step.effect is not None:
                step = dialogue.resume(step.state, outcomes[type(step.effect).__name__](step.effect), who)
            check(step.screen)
            seen.add(step.screen.name)
    assert seen >= set(BUILDERS) - {"main"} | {"bye_started", "bye_pending", "bye_cancelled", "bye_too_many"}
