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
