"""Meters, tenants and the outbox job: plain data, persisted by `storage/`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


def new_id() -> str:
    return str(uuid.uuid4())


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


@dataclass
class Tenant:
    id: str
    phone: str  # 2547XXXXXXXX
    name: str = ""
    language: str = "en"
    telegram_user_id: int | None = None
    telegram_chat_id: int | None = None
    created_at: datetime | None = None


@dataclass
class Job:
    """An outbox row: written in the same transaction as the state change that needs it."""

    id: int
    kind: str
    payload: dict
    attempts: int
    run_after: datetime
    status: str = "queued"
    last_error: str | None = None


MAX_METER_NUMBER_LEN = 12
