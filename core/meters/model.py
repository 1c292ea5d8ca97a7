"""The meter: plain data, persisted by `storage/`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

MAX_METER_NUMBER_LEN = 12
# Letters, digits and dashes: it is Daraja's AccountReference, typed by tenants on a keypad.
METER_NUMBER = re.compile(r"^[A-Za-z0-9-]{1,%d}$" % MAX_METER_NUMBER_LEN)


@dataclass
class Meter:
    id: str
    number: str  # printed on the unit; Daraja's AccountReference, so <= 12 chars
    name: str
    device_id: str
    profile: str = "seed"
    price_per_kwh: Decimal | None = None
    active: bool = True
    last_balance: Decimal | None = None
    last_balance_at: datetime | None = None
    dp_specs: dict = field(default_factory=dict)  # code -> {type, scale, step, min, max, unit}
    created_at: datetime | None = None
    online: bool | None = None
    last_energy: Decimal | None = None  # kWh left, for energy meters


# What a payer may type as the account number that we forgive: case, spaces and dashes
# (`a 101`, `A-101` -> `A101`). Compared with a meter number put through the same rule.
ACCOUNT_MAX_LEN = 40  # longer than any meter number, shorter than anything worth reading
_FORGIVEN = re.compile(r"[\s-]+")
_ACCOUNT_KEY = re.compile(r"^[A-Z0-9]{1,%d}$" % MAX_METER_NUMBER_LEN)


def account_key(raw: object) -> str | None:
    """The meter number a payer meant, as a comparison key; None when it cannot name any meter
    (empty, too long, control characters or anything but letters, digits, spaces and dashes)."""
    if not isinstance(raw, str) or len(raw) > ACCOUNT_MAX_LEN or not raw.isascii():
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in raw):
        return None
    key = _FORGIVEN.sub("", raw).upper()
    return key if _ACCOUNT_KEY.match(key) else None
