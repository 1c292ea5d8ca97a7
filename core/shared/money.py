"""Money and amount rules. Tenants pay whole KES; inside we keep `int` KES or `Decimal`, never float."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from core.shared.errors import InvalidInput


# ASCII digits only: `\d` would take full-width (１００) and Arabic-Indic digits, which Decimal reads too.
# No exponent either (1E+2): an amount is written the way a person types it.
PLAIN_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def is_plain_number(value: object) -> bool:
    """`100` or `27.50` as typed: ASCII digits, at most one dot; no sign, exponent or other digits."""
    if isinstance(value, str):
        return bool(PLAIN_NUMBER.match(value.strip()))
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def parse_whole_kes(value: object, *, minimum: int, maximum: int) -> int:
    """A tenant's amount: whole KES within limits. `500`, `"500"` and `500.0` are fine; `500.5` is not.

    Floats arrive from JSON (`500.0`); they are read through `repr` so that no binary fraction leaks in.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidInput("amount must be a whole number of KES", code="invalid_amount")
    if isinstance(value, str) and not PLAIN_NUMBER.match(value.strip()):
        raise InvalidInput("amount must be a whole number of KES", code="invalid_amount")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except (InvalidOperation, ValueError):
        raise InvalidInput("amount must be a whole number of KES", code="invalid_amount") from None
    if not amount.is_finite() or amount != amount.to_integral_value():
        raise InvalidInput("amount must be a whole number of KES (no cents)", code="invalid_amount")
    whole = int(amount)
    if whole < minimum or whole > maximum:
        raise InvalidInput(
            f"amount must be between KES {minimum:,} and KES {maximum:,}", code="amount_out_of_range"
        )
    return whole


def format_kes(amount: Decimal | int) -> str:
    """`KES 1,250` or `KES 1,250.50` for a human."""
    value = Decimal(amount)
    if value == value.to_integral_value():
        return f"KES {int(value):,}"
    return f"KES {value.quantize(Decimal('0.01')):,}"
