"""Money and amount rules. Tenants pay whole KES; inside we keep `int` KES or `Decimal`, never float."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from core.shared.errors import InvalidInput


# ASCII only: `\d` alone takes full-width and Arabic-Indic digits, which no M-Pesa amount is written in.
PLAIN_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")
CENT = Decimal("0.01")


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


def parse_amount(value: object, *, cents: bool = False, limits: tuple[int, int] | None = None) -> Decimal:
    """An amount of KES. A tenant pays whole KES typed as plain digits (`500`, `"500"`, `500.0`; not
    `500.5`) within `limits`; an operator's manual credit (`cents=True`) is any number above 0 with at
    most 2 decimals."""
    number = read_decimal(value, plain=not cents)
    if number is None:
        raise InvalidInput(f"amount must be a number of KES, not {str(value)[:20]!r}" if cents
                           else "amount must be a whole number of KES", code="invalid_amount")
    if cents:
        if number <= 0:
            raise InvalidInput("amount must be more than 0 KES", code="invalid_amount")
        if number != number.quantize(CENT):
            raise InvalidInput("amount can have at most 2 decimals (cents)", code="invalid_amount")
    elif number != number.to_integral_value():
        raise InvalidInput("amount must be a whole number of KES (no cents)", code="invalid_amount")
    if limits is not None and not limits[0] <= number <= limits[1]:
        raise InvalidInput(f"amount must be between KES {limits[0]:,} and KES {limits[1]:,}",
                           code="amount_out_of_range")
    return number


def parse_whole_kes(value: object, *, minimum: int, maximum: int) -> int:
    """A tenant's amount: whole KES within limits (see `parse_amount`)."""
    return int(parse_amount(value, limits=(minimum, maximum)))


def parse_price(value: object) -> Decimal | None:
    """A price per kWh in KES, more than 0; None when none is given (`None` or `""`)."""
    if value is None or value == "":
        return None
    price = read_decimal(value)
    if price is None:
        raise InvalidInput(f"price must be a number of KES per kWh, not {str(value)[:20]!r}", code="invalid_price")
    if price <= 0:
        raise InvalidInput("price must be more than 0 KES per kWh", code="invalid_price")
    return price


def format_kes(amount: Decimal | int) -> str:
    """`KES 1,250` or `KES 1,250.50` for a human."""
    value = Decimal(amount)
    if value == value.to_integral_value():
        return f"KES {int(value):,}"
    return f"KES {value.quantize(Decimal('0.01')):,}"
