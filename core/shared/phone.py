"""Kenyan mobile numbers. Stored as E.164 without the `+` (`254712345678`), as Daraja wants them.

`phonenumbers` is a data library, not a framework; it knows Kenya's numbering plan so we don't.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

from core.shared.errors import InvalidInput


def normalize_kenyan_mobile(raw: object) -> str:
    """Accepts `0712…`, `0112…`, `+254712…`, `254712…` (spaces and dashes allowed); returns `254712…`."""
    if not isinstance(raw, (str, int)) or isinstance(raw, bool):
        raise InvalidInput("phoneNumber must be a Kenyan mobile number such as 0712345678", code="invalid_phone")
    return _normalized(str(raw).strip())


_MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


# phonenumbers walks Kenya's numbering plan for each call (about 7 µs here); a phone comes back hop after hop
# of a USSD session and message after message of a chat. Only valid numbers are kept (a refusal raises).
@functools.lru_cache(maxsize=4096)
def _normalized(text: str) -> str:
    if text.startswith("254"):
        text = "+" + text
    try:
        number = parse(text, "KE")
    except phonenumbers.NumberParseException:
        raise InvalidInput("phoneNumber must be a Kenyan mobile number such as 0712345678", code="invalid_phone") from None
    # For a +254 number, a mobile type is already a valid number: is_valid_number is number_type() !=
    # UNKNOWN for the one region of the code (KE), so asking both walked the plan twice.
    if number.country_code != 254 or phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise InvalidInput("phoneNumber must be a Kenyan mobile number such as 0712345678", code="invalid_phone")
    national = str(number.national_number)
    if len(national) != 9 or national[0] not in "17":
        raise InvalidInput("phoneNumber must be a Kenyan mobile number such as 0712345678", code="invalid_phone")
    return "254" + national


# The form Africa's Talking posts and we store (`+254`, then nine digits not starting with 0: nothing for
# phonenumbers to strip or guess), which it parses to just its country code and national number. Built
# directly: ~2 µs instead of ~40 (tests/test_properties.py holds the two equal).
_INTERNATIONAL_KE = re.compile(r"\+254([1-9][0-9]{8})")


def parse(text: str, region: str | None = None) -> phonenumbers.PhoneNumber:
    """phonenumbers.parse(text, region), faster for the `+254…` form."""
    match = _INTERNATIONAL_KE.fullmatch(text)
    if match:
        return phonenumbers.PhoneNumber(country_code=254, national_number=int(match.group(1)))
    return phonenumbers.parse(text, region)


def stored_form(raw: str) -> str | None:
    """What normalize_kenyan_mobile(raw) returns if it returns at all, read off Africa's Talking's
    `+2547…`/`+2541…` without checking that the number is a mobile in use (the plan walk, ~7 µs); None for
    any other form. For a channel that can compare the answer with a phone it stored (and so checked)
    before: a match needs no second check."""
    match = _INTERNATIONAL_KE.fullmatch(raw)
    national = match.group(1) if match else ""
    return "254" + national if national[:1] in ("1", "7") else None


def mask_phone(phone: object) -> str:
    """For logs: `254712345678` -> `2547*****678`, the form Daraja itself masks numbers in. Enough to
    tell tenants apart, not to dial them; anything too short to be a number shows nothing."""
    digits = re.sub(r"\D", "", str(phone))
    if len(digits) < 10:
        return "****"
    return digits[:4] + "*" * (len(digits) - 7) + digits[-3:]


def mask_checkout_id(checkout_request_id: str | None) -> str:
    """For logs: Daraja's CheckoutRequestID ends with the payer's 9 national digits
    (ws_CO_<time><712345678>), so it is masked like a phone (`mask_phone`): the last 3 digits show."""
    text = checkout_request_id or ""
    if len(text) < 13:
        return "****"
    return text[:-9] + "******" + text[-3:]
SAFARICOM = "Safaricom"
SAFARICOM_NETWORK_CODE = "63902"  # MCC 639 (Kenya) + MNC 02, as Africa's Talking's `networkCode` gives it
KENYA_MCC = "639"


@functools.lru_cache(maxsize=4096)  # as _normalized: asked on every input of a conversation
def carrier_of(phone: str) -> str:
    """The network a `2547…`/`2541…` number was allocated to ("Safaricom", "Airtel", "Telkom", …), from
    phonenumbers' carrier data; "" when the range is unknown to it. A number ported to another network
    keeps its prefix, so this is the allocation, not a guarantee."""
    from phonenumbers import carrier

    try:
        return carrier.name_for_number(parse("+" + phone.lstrip("+")), "en")
    except phonenumbers.NumberParseException:
        return ""


def can_get_stk_prompt(phone: str, network_code: str = "") -> bool:
    """Daraja's STK push reaches Safaricom lines only. True when the USSD gateway says the caller is on
    Safaricom; False when it says another Kenyan network, or, with no word from a gateway, when the number
    is in another network's range. A range phonenumbers does not
    know (a new Safaricom block) gets the benefit of the doubt: M-Pesa itself answers if it is wrong."""
    code = (network_code or "").strip()
    if code == SAFARICOM_NETWORK_CODE:
        # The gateway sees the line on Safaricom now: a number ported in from another network's range
        # can get the prompt, and the range lookup (phonenumbers' carrier data) is not needed.
        return True
    if code.startswith(KENYA_MCC):
        return False
    return carrier_of(phone) in (SAFARICOM, "")
