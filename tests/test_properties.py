"""Properties that must hold for every input, found by hypothesis: the callback parser, phone and amount
rules, the purchase dialogue (no input sequence pays without a confirm) and exact meter charge scaling."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import parse_qs

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.dialogue import machine as dialogue
from core.dialogue.screens import BUY_CONFIRM
from core.dialogue.types import (
    BalanceInfo,
    BalanceRead,
    Caller,
    FindMeter,
    LanguageSaved,
    ListPayments,
    MeterChoice,
    MeterFound,
    PaymentRequested,
    PaymentsListed,
    ReadBalance,
    SaveLanguage,
    StartPayment,
)
from core.meters.profiles import DpSpec, from_raw, to_raw
from core.payments.callbacks import MalformedCallback, StkCallback, parse_stk_callback
from core.shared.errors import InvalidInput
from core.shared.money import parse_whole_kes
from core.shared.phone import normalize_kenyan_mobile, parse, stored_form
from ussd.routes import form_fields

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)


# --- the callback parser -----------------------------------------------------------------------

def callback_body(result_code, items) -> str:
    return json.dumps({"Body": {"stkCallback": {
        "MerchantRequestID": "m-1", "CheckoutRequestID": "ws_CO_1", "ResultCode": result_code, "ResultDesc": "x",
        "CallbackMetadata": {"Item": items}}}})


@given(st.one_of(json_values.map(json.dumps), st.binary(max_size=200), st.text(max_size=200),
                 st.builds(callback_body, json_values, json_values)))
@settings(max_examples=300)
def test_parser_answers_a_callback_or_malformed_never_crashes(body):
    try:
        parsed = parse_stk_callback(body)
    except MalformedCallback:
        return
    assert isinstance(parsed, StkCallback) and parsed.checkout_request_id


@given(st.decimals(min_value=1, max_value=10**6, places=2, allow_nan=False, allow_infinity=False),
       st.sampled_from(["int", "str", "float"]))
def test_paid_amount_is_read_exactly(amount, form):
    value = {"int": int(amount) if amount == amount.to_integral_value() else str(amount),
             "str": str(amount), "float": float(amount)}[form]
    items = [{"Name": "Amount", "Value": value}, {"Name": "MpesaReceiptNumber", "Value": "QK1"}]
    parsed = parse_stk_callback(callback_body(0, items))
    assert parsed.succeeded and parsed.amount == amount


# --- USSD form bodies ----------------------------------------------------------------------------

FORM_BYTES = st.binary(max_size=80) | st.lists(
    st.sampled_from(["sessionId", "text", "phoneNumber", "=", "&", "+", "%2A", "%2B", "%00", "%", "%e2%82", "%ZZ",
                     "\x00", "é", "1", "*", " "]), max_size=20).map(lambda parts: "".join(parts).encode())


@given(FORM_BYTES)
@settings(max_examples=500)
def test_a_ussd_form_is_read_as_parse_qs_reads_it(body):
    expected = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    assert form_fields(body) == {name: [value.replace("\x00", "") for value in values]
                                 for name, values in expected.items()}


# --- phones and amounts ------------------------------------------------------------------------

@given(st.from_regex(r"\A(07|01|\+2547|2547|\+2541|2541)[0-9]{8}\Z"))
def test_kenyan_mobile_is_normalised_once_and_for_all(raw):
    try:
        phone = normalize_kenyan_mobile(raw)
    except InvalidInput:
        return  # a range Kenya's plan does not use
    assert len(phone) == 12 and phone.startswith(("2547", "2541")) and phone.isdigit()
    assert normalize_kenyan_mobile(phone) == phone


@given(st.from_regex(r"(0|\+?254)[0-9]{9}", fullmatch=True, alphabet=st.characters(codec="ascii")))
@settings(max_examples=500)
def test_a_number_is_taken_as_phonenumbers_judges_a_kenyan_mobile(raw):
    """normalize_kenyan_mobile asks phonenumbers' number_type only; is_valid_number agrees with it."""
    try:  # `000…` is Kenya's international prefix: such a number may not parse at all
        number = phonenumbers.parse(raw if not raw.startswith("254") else "+" + raw, "KE")
    except phonenumbers.NumberParseException:
        number = None
    mobile = number is not None and number.country_code == 254 and phonenumbers.is_valid_number(number) and (
        phonenumbers.number_type(number) in (phonenumbers.PhoneNumberType.MOBILE,
                                             phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE))
    try:
        normalize_kenyan_mobile(raw)
    except InvalidInput:
        assert not mobile or str(number.national_number)[0] not in "17"
    else:
        assert mobile


@given(st.from_regex(r"\A\+254[0-9]{9}\Z") | st.from_regex(r"\A\+?254[0-9 ]{7,11}\Z") | st.text(max_size=16))
@settings(max_examples=500)
def test_the_fast_parse_gives_what_phonenumbers_gives(raw):
    for region in ("KE", None):
        try:
            expected = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            with pytest.raises(phonenumbers.NumberParseException):
                parse(raw, region)
            continue
        assert parse(raw, region) == expected


@given(st.from_regex(r"\A\+254[0-9]{9}\Z") | st.from_regex(r"\A\+?254[0-9 ]{7,11}\Z") | st.text(max_size=16))
@settings(max_examples=500)
def test_the_stored_form_is_what_normalizing_gives_whenever_it_gives_one(raw):
    """ussd/hop.py starts a hop's reads with stored_form(raw) and checks the number only when its session
    does not vouch for it: the two must agree on every number normalize_kenyan_mobile takes."""
    try:
        phone = normalize_kenyan_mobile(raw)
    except InvalidInput:
        return
    assert stored_form(raw) in (phone, None)
    if raw.startswith("+254") and raw[1:].isdigit():
        assert stored_form(raw) == phone


@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.none(), st.booleans()))
@settings(max_examples=300)
def test_phone_rule_refuses_cleanly(raw):
    try:
        phone = normalize_kenyan_mobile(raw)
    except InvalidInput as error:
        assert error.code == "invalid_phone"  # noqa: PT017 (a property over every input, not one raise)
        return
    assert phone.isascii() and phone.isdigit() and len(phone) == 12


@given(st.integers(min_value=10, max_value=70_000))
def test_every_whole_amount_in_range_is_taken_in_every_form(amount):
    for form in (amount, str(amount), f" {amount} ", float(amount), f"{amount}.0"):
        assert parse_whole_kes(form, minimum=10, maximum=70_000) == amount


@given(st.one_of(st.text(max_size=12), st.integers(), st.floats(), st.decimals()))
@example("\uff11\uff10\uff10")  # full-width 100
@example("\u0665\u0660\u0660")  # Arabic-Indic 500
@settings(max_examples=400)
def test_an_accepted_amount_is_whole_in_range_and_written_in_ascii(raw):
    try:
        amount = parse_whole_kes(raw, minimum=10, maximum=70_000)
    except InvalidInput:
        return
    assert isinstance(amount, int) and 10 <= amount <= 70_000
    if isinstance(raw, str):
        assert raw.strip().isascii(), f"{raw!r} was taken as {amount}"


# --- the dialogue: money only after a confirm --------------------------------------------------

A101 = MeterChoice(number="A101", name="Flat A1")
OUTCOMES = {
    FindMeter: lambda e: MeterFound(number=e.number, meter=MeterChoice(number=e.number.upper(), name="x")),
    ReadBalance: lambda e: BalanceRead(balance=BalanceInfo(meter=e.meter, amount=Decimal("12.5"), live=True)),
    ListPayments: lambda e: PaymentsListed(items=()),
    StartPayment: lambda e: PaymentRequested(ok=True, payment_id="p-1"),
    SaveLanguage: lambda e: LanguageSaved(language=e.language),
}
entries = st.lists(st.one_of(st.sampled_from(["1", "2", "3", "4", "0", "00", "98", "99", "A101", "B7", "50",
                                              "500", "70001", "", " 1 "]),
                             st.text(max_size=45)), max_size=25)


@given(st.lists(st.sampled_from([(), (A101,), tuple(MeterChoice(number=f"M{i}", name="m") for i in range(7))]),
                min_size=1, max_size=1), entries)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_no_input_sequence_pays_without_a_confirm(meters, inputs):
    who = Caller(phone="254712345678", meters=meters[0], min_amount=10, max_amount=70_000)
    step = dialogue.start(who)
    for entry in inputs:
        shown = step.screen
        step = dialogue.handle(step.state, entry, who)
        while step.effect is not None:
            if isinstance(step.effect, StartPayment):
                assert shown is not None and shown.name == BUY_CONFIRM and entry.strip() == "1"
                assert 10 <= step.effect.amount <= 70_000
            step = dialogue.resume(step.state, OUTCOMES[type(step.effect)](step.effect), who)
        assert step.screen is not None
        if step.screen.end:
            return


# --- meter charge scaling ----------------------------------------------------------------------

@given(st.integers(min_value=0, max_value=4), st.integers(min_value=1, max_value=100),
       st.integers(min_value=0, max_value=10**7))
def test_charge_scaling_round_trips_exactly(scale, step, steps):
    spec = DpSpec(code="charge_money", type="Integer", scale=scale, step=step, min=0, max=10**9)
    raw = min(steps * step, spec.max - spec.max % step)
    human = from_raw(raw, spec)
    assert isinstance(human, Decimal)
    assert to_raw(human, spec) == raw
    assert to_raw(str(human), spec) == raw


@given(st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False))
def test_a_value_off_the_grid_is_refused_not_rounded(value):
    spec = DpSpec(code="charge_money", type="Integer", scale=2, step=1, min=0, max=10**9)
    try:
        raw = to_raw(value, spec)
    except InvalidInput:
        assert value.scaleb(2) != value.scaleb(2).to_integral_value()
        return
    assert from_raw(raw, spec) == value


@pytest.mark.parametrize("entry", ["\u00b2", "\u0661", "\uff11"])  # superscript, Arabic-Indic, full-width
def test_digits_that_are_not_ascii_are_a_wrong_choice_not_a_crash(entry):
    """`'²'.isdigit()` is True and `int('²')` raises: found by the property above (a USSD hop would 500)."""
    who = Caller(phone="254712345678", meters=(A101,), min_amount=10, max_amount=70_000)
    for first in ("1", "4"):  # the meter list, the language list
        step = dialogue.handle(dialogue.start(who).state, first, who)
        step = dialogue.handle(step.state, entry, who)
        assert step.screen is not None and step.effect is None and step.state.errors == 1
