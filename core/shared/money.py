"""Money and amount rules. Tenants pay whole KES; inside we keep `int` KES or `Decimal`, never float."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from core.shared.errors import InvalidInput

# ASCII digits only: `\d` would take full-width (U+FF10..U+FF19) and Arabic-Indic digits, which Decimal reads too.
# No exponent either (1E+2): an amount is written the way a person types it.
PLAIN_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")
CENT = Decimal("0.01")
# Far above any real figure is a typo (and 1e30 overflows the columns, Numeric(14, 2) and (18, 4)).
MAX_MANUAL_TOPUP = Decimal(1_000_000)
MAX_PRICE_PER_KWH = Decimal(10_000)  # Kenyan tariffs are about KES 25-35 per kWh


def read_decimal(value: object, *, plain: bool = False) -> Decimal | None:
    """The one way a number from outside becomes Decimal; None when it is not a finite number.

    Floats arrive from JSON (`500.0`); they are read through `repr` so that no binary fraction leaks in.
    `plain` accepts only digits and a point in text (what a keypad types): no sign, no exponent.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str) and not value.isascii():
        return None  # Decimal() reads full-width and other scripts' digits; nobody means them here
    if plain and isinstance(value, str) and not PLAIN_NUMBER.match(value.strip()):
        return None
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def is_plain_number(value: object) -> bool:
    """`100` or `27.50` as typed: ASCII digits, at most one dot; no sign, exponent or other digits."""
    if isinstance(value, str):
        return bool(PLAIN_NUMBER.match(value.strip()))
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _typed_number(value: object) -> Decimal | None:
    """A number as an operator types it; a leading minus is read so that `-5` hears "more than 0"."""
    text = str(value).strip() if isinstance(value, (str, int, Decimal)) and not isinstance(value, bool) else None
    if text is None:
        return None
    number = read_decimal(text.removeprefix("-"), plain=True)
    return -number if number is not None and text.startswith("-") else number


def parse_amount(value: object, *, cents: bool = False, limits: tuple[int, int] | None = None) -> Decimal:
    """An amount of KES. A tenant pays whole KES typed as plain digits (`500`, `"500"`, `500.0`; not
    `500.5`) within `limits`; an operator's manual credit (`cents=True`) is a plain number above 0 with at
    most 2 decimals, up to MAX_MANUAL_TOPUP."""
    if cents:
        return _manual_amount(value)
    number = read_decimal(value, plain=True)
    if number is None:
        raise InvalidInput("amount must be a whole number of KES", code="invalid_amount")
    if number != number.to_integral_value():
        raise InvalidInput("amount must be a whole number of KES (no cents)", code="invalid_amount")
    if limits is not None and not limits[0] <= number <= limits[1]:
        raise InvalidInput(f"amount must be between KES {limits[0]:,} and KES {limits[1]:,}",
                           code="amount_out_of_range")
    return number


def _manual_amount(value: object) -> Decimal:
    number = _typed_number(value)
    if number is None:
        raise InvalidInput(f"amount must be a number of KES like 1250.50, not {str(value)[:20]!r}",
                           code="invalid_amount")
    if number <= 0:
        raise InvalidInput("amount must be more than 0 KES", code="invalid_amount")
    if number > MAX_MANUAL_TOPUP:
        raise InvalidInput(f"amount must be at most KES {MAX_MANUAL_TOPUP:,}", code="invalid_amount")
    if number != number.quantize(CENT):
        raise InvalidInput("amount can have at most 2 decimals (cents)", code="invalid_amount")
    return number


def parse_whole_kes(value: object, *, minimum: int, maximum: int) -> int:
    """A tenant's amount: whole KES within limits (see `parse_amount`)."""
    return int(parse_amount(value, limits=(minimum, maximum)))


def parse_price(value: object) -> Decimal | None:
    """A price per kWh in KES, more than 0 and at most MAX_PRICE_PER_KWH; None when none is given."""
    if value is None or value == "":
        return None
    price = _typed_number(value)
    if price is None:
        raise InvalidInput(f"price must be a number of KES per kWh like 27.50, not {str(value)[:20]!r}",
                           code="invalid_price")
    if not 0 < price <= MAX_PRICE_PER_KWH:
        raise InvalidInput(f"price must be more than 0 and at most {MAX_PRICE_PER_KWH:,} KES per kWh",
                           code="invalid_price")
    return price


def format_kes(amount: Decimal | int) -> str:
    """`KES 1,250` or `KES 1,250.50` for a human."""
    value = Decimal(amount)
    if value == value.to_integral_value():
        return f"KES {int(value):,}"
    return f"KES {value.quantize(Decimal('0.01')):,}"
