"""The purchase dialogue on its own: pure state machine, no I/O, every path in both languages."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.dialogue import machine as dialogue
from core.dialogue import texts
from core.dialogue.types import (
    AlertInfo,
    AlertSaved,
    BalanceInfo,
    BalanceRead,
    Caller,
    DialogueState,
    FindMeter,
    LanguageSaved,
    ListPayments,
    MeterChoice,
    MeterFound,
    PaymentLine,
    PaymentRequested,
    PaymentsListed,
    ReadBalance,
    SaveAlert,
    SaveLanguage,
    StartPayment,
    Step,
)

A101 = MeterChoice(number="A101", name="Flat A1")
TWELVE = tuple(MeterChoice(number=f"M{i:02d}", name=f"Block {i}") for i in range(1, 13))


def caller(meters=(A101,), language="en", **extra) -> Caller:
    return Caller(phone="254712345678", language=language, meters=tuple(meters), min_amount=10,
                  max_amount=70_000, **extra)


class Session:
    """Feeds inputs like a channel would; effects are answered from `outcomes` (effect type -> outcome)."""

    def __init__(self, who: Caller, **outcomes) -> None:
        self.who, self.outcomes, self.effects = who, outcomes, []
        self.step = dialogue.start(who)

    def send(self, entry: str) -> Step:
        self.step = dialogue.handle(self.step.state, entry, self.who)
        while self.step.effect is not None:
            self.effects.append(self.step.effect)
            outcome = self.outcomes[type(self.step.effect).__name__]
            outcome = outcome(self.step.effect) if callable(outcome) else outcome
            self.step = dialogue.resume(self.step.state, outcome, self.who)
        return self.step

    @property
    def screen(self):
        return self.step.screen

    def keys(self) -> list[str]:
        return [o.key for o in self.screen.options]


def test_main_menu_in_both_languages():
    en, sw = dialogue.start(caller()).screen, dialogue.start(caller(language="sw")).screen
    assert [o.label for o in en.options] == ["Buy electricity", "Check balance", "My payments", "Language"]
    assert [o.label for o in sw.options] == ["Nunua umeme", "Angalia salio", "Malipo yangu", "Lugha"]
    assert en.name == sw.name == "main" and not en.end and en.nav == ()
    assert dialogue.start(caller(language="fr")).state.language == "en"


@pytest.mark.parametrize("language", ["en", "sw"])
def test_buy_a_linked_meter(language):
    s = Session(caller(language=language), StartPayment=PaymentRequested(ok=True, payment_id="p-1"))
    assert s.send("1").screen.name == "buy_meters" and s.keys() == ["1", "2"]  # A101, other meter
    amount = s.send("1").screen
    assert amount.name == "buy_amount" and amount.expects == "amount" and "10-70,000" in amount.title
    confirm = s.send("500").screen
    assert confirm.name == "buy_confirm" and s.keys() == ["1", "2", "3"]  # pay, cancel, another number
    assert any("A101" in line and "Flat A1" in line for line in confirm.body)
    assert any("KES 500" in line for line in confirm.body) and any("0712345678" in line for line in confirm.body)
    bye = s.send("1")
    assert s.effects == [StartPayment(meter=A101, amount=500)]
    assert bye.screen.end and bye.screen.name == "bye_started" and bye.state.ended
    assert "KES 500" in bye.screen.title and "0712345678" in bye.screen.title and "A101" in bye.screen.title
    assert bye.state.payment_id == "p-1"


def test_buy_any_meter_by_number():
    found = MeterChoice(number="B7", name="Shop")
    outcomes = {"NOPE": MeterFound("NOPE", None), "OFF1": MeterFound("OFF1", MeterChoice(number="OFF1", name="x"), False),
                "B7": MeterFound("B7", found)}
    s = Session(caller(meters=()), FindMeter=lambda e: outcomes[e.number])
    assert s.send("1").screen.name == "buy_number"  # no linked meters: straight to the number
    assert s.send("NOPE").screen.error == "Meter NOPE not found." and s.screen.name == "buy_number"
    assert s.send("OFF1").screen.error == "Meter OFF1 is not in service."
    assert s.send("B7").screen.name == "buy_amount" and s.step.state.errors == 0
    assert s.effects == [FindMeter("NOPE"), FindMeter("OFF1"), FindMeter("B7")]
    assert s.send("0").screen.name == "buy_number"  # back


@pytest.mark.parametrize("entry", ["A 101", "THIRTEEN-CHAR", "", "*", "#", "A101#", "1*2"])
def test_malformed_meter_numbers_never_looked_up(entry):
    s = Session(caller(meters=()))
    s.send("1")
    assert s.send(entry).screen.error == "Use the number on the meter." and s.effects == []


def test_other_meter_from_the_list():
    s = Session(caller())
    s.send("1")
    assert s.send("2").screen.name == "buy_number"


def test_twelve_meters_are_paged_five_at_a_time():
    s = Session(caller(meters=TWELVE))
    s.send("1")
    assert s.keys() == ["1", "2", "3", "4", "5", "6", "98"]
    assert [o.label.split()[0] for o in s.screen.options[:5]] == ["M01", "M02", "M03", "M04", "M05"]
    s.send("98")
    assert [o.label.split()[0] for o in s.screen.options[:5]] == ["M06", "M07", "M08", "M09", "M10"]
    s.send("98")
    assert s.keys() == ["1", "2", "3"]  # M11, M12, other meter; no more
    assert s.send("98").screen.error == "Invalid choice."
    assert s.send("0").screen.options[0].label.startswith("M06")  # back is the previous page
    s.send("98")
    assert s.send("2").screen.name == "buy_amount" and s.step.state.frame.meter.number == "M12"
    assert s.send("0").screen.options[0].label.startswith("M11")  # back from the amount: same page
    assert s.send("3").screen.name == "buy_number"


def test_choices_are_what_was_shown_even_if_the_list_changes():
    s = Session(caller(meters=TWELVE))
    s.send("1")
    s.who = caller(meters=TWELVE[1:])  # the landlord unlinked M01 between two hops
    assert s.send("1").screen.name == "buy_amount" and s.step.state.frame.meter.number == "M01"


def test_home_back_and_zero_on_the_first_screen():
    s = Session(caller())
    assert s.send("0").screen.error == "Invalid choice." and s.screen.name == "main"  # nothing to go back to
    for entry in ("1", "1", "500"):
        s.send(entry)
    assert s.screen.name == "buy_confirm"
    assert s.send("0").screen.name == "buy_amount"
    assert s.send("0").screen.name == "buy_meters"
    assert s.send("0").screen.name == "main"
    for entry in ("1", "1", "500"):
        s.send(entry)
    home = s.send("00")
    assert home.screen.name == "main" and home.state.history == () and home.screen.error is None


@pytest.mark.parametrize("language,message", [("en", "Whole KES 10-70,000 only."), ("sw", "KES 10-70,000 bila senti.")])
@pytest.mark.parametrize("entry", ["abc", "500.5", "5", "70001", "99999999999999999999999", "", "*", "#", "-50",
                                   "1e3", "5 00", "1,000"])
def test_bad_amounts_reprompt(language, message, entry):
    s = Session(caller(language=language))
    s.send("1")
    s.send("1")
    assert s.send(entry).screen.error == message and s.screen.name == "buy_amount"


def test_whole_amount_with_point_zero_is_fine():
    s = Session(caller())
    for entry in ("1", "1"):
        s.send(entry)
    assert s.send("500.0").state.frame.amount == 500
    assert s.screen.name == "buy_confirm"


def test_three_wrong_entries_in_a_row_end_politely():
    s = Session(caller(language="sw"))
    s.send("9")
    s.send("x")
    assert s.send("1").screen.name == "buy_meters" and s.step.state.errors == 0  # a good entry resets the count
    s.send("7")
    s.send("")
    bye = s.send("#")
    assert bye.screen.end and bye.screen.name == "bye_too_many" and "Kwaheri" in bye.screen.title
    assert dialogue.handle(bye.state, "1", s.who).screen.name == "bye_expired"  # nothing after the end


def test_cancel_on_confirm_moves_nothing():
    s = Session(caller())
    for entry in ("1", "1", "100"):
        s.send(entry)
    bye = s.send("2")
    assert bye.screen.name == "bye_cancelled" and bye.screen.end and s.effects == []


@pytest.mark.parametrize("code,name", [("payment_pending", "bye_pending"), ("meter_inactive", "bye_not_started"),
                                       ("invalid_phone", "bye_not_started")])
def test_refused_payment_ends_with_a_reason(code, name):
    s = Session(caller(), StartPayment=PaymentRequested(ok=False, code=code))
    for entry in ("1", "1", "100", "1"):
        s.send(entry)
    assert s.screen.name == name and s.screen.end and s.step.state.payment_id is None


def _balance(amount=None, age_s=None, live=False, meter=A101):
    return BalanceRead(BalanceInfo(meter=meter, amount=amount, age_s=age_s, live=live))


@pytest.mark.parametrize("outcome,shown", [
    (_balance(Decimal("250.5"), live=True), "KES 250.50 now"),
    (_balance(Decimal("1250"), age_s=3 * 3600), "KES 1,250, 3 h ago"),
    (_balance(Decimal("80"), age_s=30), "KES 80, just now"),
    (_balance(Decimal("80"), age_s=5 * 86400), "KES 80, 5 days ago"),
    (_balance(None), "Balance not known yet."),
])
def test_balance_of_the_only_meter(outcome, shown):
    s = Session(caller(), ReadBalance=outcome)
    screen = s.send("2").screen
    assert s.effects == [ReadBalance(A101)]  # one meter: no list to pick from
    assert screen.name == "balance" and shown in screen.body and any("A101" in line for line in screen.body)
    assert s.send("1").screen.name == "buy_amount" and s.step.state.frame.meter == A101
    assert s.send("0").screen.name == "balance"


def test_balance_with_several_meters_and_with_none():
    s = Session(caller(meters=TWELVE), ReadBalance=lambda e: _balance(Decimal("10"), live=True, meter=e.meter))
    assert s.send("2").screen.name == "balance_meters" and s.keys() == ["1", "2", "3", "4", "5", "98"]
    s.send("98")
    assert s.send("3").screen.name == "balance" and s.effects == [ReadBalance(TWELVE[7])]
    assert s.send("0").screen.name == "balance_meters"
    none = Session(caller(meters=()))
    assert none.send("2").screen.name == "balance_none" and none.effects == []
    assert none.send("1").screen.error == "Invalid choice."
    assert none.send("0").screen.name == "main"


def test_swahili_balance_age():
    s = Session(caller(language="sw"), ReadBalance=_balance(Decimal("1250"), age_s=2 * 3600))
    assert "KES 1,250, saa 2 zilizopita" in s.send("2").screen.body


def test_recent_payments():
    at = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)  # already the 28th in Nairobi
    items = (PaymentLine(at=at, meter_number="A101", amount=500, status="completed"),
             PaymentLine(at=at, meter_number="A101", amount=70_000, status="cancelled"))
    s = Session(caller(), ListPayments=PaymentsListed(items))
    screen = s.send("3").screen
    assert s.effects == [ListPayments(limit=3)]
    assert screen.body == ["28/11 KES 500 Paid A101", "28/11 KES 70,000 Cancelled A101"]
    assert s.send("1").screen.error == "Invalid choice." and s.send("0").screen.name == "main"
    empty = Session(caller(language="sw"), ListPayments=PaymentsListed(()))
    assert empty.send("3").screen.body == ["Bado hakuna malipo."]


def test_choosing_a_language():
    s = Session(caller(), SaveLanguage=lambda e: LanguageSaved(e.language))
    assert [o.label for o in s.send("4").screen.options] == ["English", "Kiswahili"]
    assert s.send("3").screen.error == "Invalid choice."
    home = s.send("2")
    assert s.effects == [SaveLanguage("sw")]
    assert home.state.language == "sw" and home.screen.name == "main" and home.screen.notice == "Lugha imehifadhiwa."
    assert home.screen.options[0].label == "Nunua umeme"
    assert s.send("1").screen.title == "Chagua mita:"


def test_state_survives_json():
    s = Session(caller(meters=TWELVE), ReadBalance=_balance(Decimal("12.3400"), age_s=99))
    for entry in ("2", "98", "1"):
        s.send(entry)
    stored = s.step.state.model_dump(mode="json")
    restored = DialogueState.model_validate(stored)
    assert restored == s.step.state and restored.balance.amount == Decimal("12.3400")


def test_every_screen_offers_back_and_home_except_main_and_the_end():
    s = Session(caller(meters=TWELVE))
    for entry in ("1", "98", "1", "100"):
        assert s.send(entry).screen.nav and [o.key for o in s.screen.nav] == ["0", "00"]
    assert dialogue.start(caller()).screen.nav == ()


@pytest.mark.parametrize("language", ["en", "sw"])
def test_pay_from_another_mpesa_number(language):
    s = Session(caller(language=language), StartPayment=PaymentRequested(ok=True, payment_id="p-1"))
    s.send("1"), s.send("1"), s.send("500")
    payer = s.send("3").screen
    assert payer.name == "buy_payer" and payer.expects == "phone"
    for bad in ("0733000222", "+15551234567"):  # Airtel, foreign (a third wrong entry would end it)
        assert s.send(bad).screen.error == texts.text(language, "err.payer") and s.screen.name == "buy_payer"
    assert s.send("0722 000 111").screen.name == "buy_confirm"  # errors reset by a good entry
    assert "0722000111" in s.screen.body[-1]
    done = s.send("1")
    assert s.effects[-1] == StartPayment(meter=A101, amount=500, payer="254722000111")
    assert done.screen.end and "0722000111" in done.screen.title


def test_a_caller_off_safaricom_is_told_at_once_and_asked_for_a_safaricom_number():
    airtel = caller(prompt_ok=False)
    start = dialogue.start(airtel).screen
    assert start.notice == "M-Pesa prompts reach Safaricom lines only."
    s = Session(airtel, StartPayment=PaymentRequested(ok=True, payment_id="p-1"))
    s.send("1"), s.send("1")
    payer = s.send("200").screen
    assert payer.name == "buy_payer" and payer.notice == "M-Pesa prompts reach Safaricom lines only."
    assert s.send("0712345678").screen.name == "buy_confirm"  # their own Safaricom line is fine too
    s.send("1")
    assert s.effects[-1] == StartPayment(meter=A101, amount=200, payer=None)  # the caller's own number


def test_the_payer_step_fits_a_ussd_screen_in_both_languages():
    from ussd.render import LIMIT, to_text

    long = MeterChoice(number="ABCDEFGHIJKL", name="Nyumba ya Mzee, Ruaka Heights Block C")
    for language in ("en", "sw"):
        s = Session(caller(meters=(long,), language=language, prompt_ok=False))
        screens = [dialogue.start(s.who).screen, s.send("1").screen, s.send("1").screen, s.send("70000").screen,
                   s.send("x").screen, s.send("0722000111").screen]
        for screen in screens:
            text = to_text(screen)
            assert len(text) <= LIMIT and text.isascii(), text
            assert screen.error is None or screen.error in text
        assert "3. " in to_text(screens[-1]) and "0722000111" in to_text(screens[-1])


# --- days left and the tenant's low-balance alerts (issue 15) -----------------------------------------

def _saved(effect: SaveAlert) -> AlertSaved:
    """What storage answers: the setting as the effect changed it (the meter's own level stays 160)."""
    threshold = None if effect.automatic else (Decimal(effect.threshold) if effect.threshold else OWN.threshold)
    return AlertSaved(AlertInfo(enabled=OWN.enabled if effect.enabled is None else effect.enabled,
                                threshold=threshold, meter_threshold=Decimal(160)))


OWN = AlertInfo(enabled=True, threshold=None, meter_threshold=Decimal(160))


@pytest.mark.parametrize("language, days, said", [
    ("en", 12, "about 12 days at your usual use"), ("en", 1, "about 1 day at your usual use"),
    ("en", 0, "less than a day at your usual use"), ("en", 400, "over 99 days at your usual use"),
    ("sw", 12, "takriban siku 12 kwa matumizi ya kawaida")])
def test_balance_says_days_left(language, days, said):
    info = BalanceInfo(meter=A101, amount=Decimal(500), live=True, days_left=days, alert=OWN)
    s = Session(caller(language=language), ReadBalance=BalanceRead(info))
    assert said in s.send("2").screen.body


def test_no_days_left_without_history_or_balance():
    for info in (BalanceInfo(meter=A101, amount=Decimal(500), live=True),
                 BalanceInfo(meter=A101, amount=None, days_left=3)):
        s = Session(caller(), ReadBalance=BalanceRead(info))
        assert not any("usual use" in line for line in s.send("2").screen.body)


def test_alerts_are_offered_only_to_a_tenant_whose_setting_was_read():
    s = Session(caller(), ReadBalance=BalanceRead(BalanceInfo(meter=A101, amount=Decimal(5), alert=None)))
    assert s.send("2").screen.name == "balance" and s.keys() == ["1"]
    assert s.send("2").screen.error == "Invalid choice."


@pytest.mark.parametrize("language", ["en", "sw"])
def test_change_the_alert_level(language):
    s = Session(caller(language=language), ReadBalance=BalanceRead(BalanceInfo(meter=A101, amount=Decimal(500),
                                                                              alert=OWN)), SaveAlert=_saved)
    s.send("2")
    assert s.keys() == ["1", "2"]
    screen = s.send("2").screen
    assert screen.name == "alerts" and s.keys() == ["1", "2"]  # no "automatic": it is automatic already
    assert screen.body[-1] == {"en": "On, below KES 160", "sw": "Zimewashwa, chini ya KES 160"}[language]
    assert s.send("1").screen.name == "alert_level" and s.screen.expects == "level"
    screen = s.send("50").screen
    assert s.effects[-1] == SaveAlert(meter=A101, enabled=True, threshold=50)
    assert screen.name == "alerts" and screen.notice == texts.text(language, "alerts_saved")
    assert screen.body[-1] == {"en": "On, below KES 50", "sw": "Zimewashwa, chini ya KES 50"}[language]
    assert s.keys() == ["1", "2", "3"]
    assert s.send("0").screen.name == "balance"  # back goes past the level screen, to where the alerts were chosen
    s.send("2")
    screen = s.send("3").screen
    assert s.effects[-1] == SaveAlert(meter=A101, automatic=True) and screen.body[-1].endswith("KES 160")


@pytest.mark.parametrize("entry", ["", "0.5", "50.5", "-5", "100001", "\u0665\u0660", "5e2", "fifty", "0"])
def test_a_bad_alert_level_reprompts_and_saves_nothing(entry):
    s = Session(caller(), ReadBalance=BalanceRead(BalanceInfo(meter=A101, amount=Decimal(5), alert=OWN)))
    s.send("2"), s.send("2"), s.send("1")
    if entry == "0":  # back, not a level
        assert s.send(entry).screen.name == "alerts"
        return
    screen = s.send(entry).screen
    assert screen.name == "alert_level" and screen.error == "Whole KES 1-100,000 only." and not s.effects[1:]


def test_turn_alerts_off_and_on_again():
    s = Session(caller(), ReadBalance=BalanceRead(BalanceInfo(meter=A101, amount=Decimal(5), alert=OWN)),
                SaveAlert=_saved)
    s.send("2"), s.send("2")
    assert [o.label for o in s.screen.options][1] == "Turn off"
    screen = s.send("2").screen
    assert s.effects[-1] == SaveAlert(meter=A101, enabled=False)
    assert screen.body[-1] == "Off" and [o.label for o in screen.options][1] == "Turn on"
    s.send("2")
    assert s.effects[-1] == SaveAlert(meter=A101, enabled=True) and s.screen.body[-1] == "On, below KES 160"


def test_an_alert_not_saved_says_so_and_keeps_the_old_setting():
    s = Session(caller(), ReadBalance=BalanceRead(BalanceInfo(meter=A101, amount=Decimal(5), alert=OWN)),
                SaveAlert=AlertSaved(None))
    s.send("2"), s.send("2")
    screen = s.send("2").screen
    assert screen.notice == "Not saved. Try again." and screen.body[-1] == "On, below KES 160"


def test_kwh_meters_set_levels_in_kwh():
    kwh = AlertInfo(threshold=Decimal(5), unit="kWh")
    s = Session(caller(), ReadBalance=BalanceRead(BalanceInfo(meter=A101, amount=Decimal(5), alert=kwh)))
    s.send("2")
    assert s.send("2").screen.body[-1] == "On, below 5 kWh"
    assert "(kWh, 1-100,000)" in s.send("1").screen.title
