"""Readings and the rows derived from them: plain data, persisted by `storage/`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal


class ReadingSource(str, enum.Enum):
    SAMPLE = "sample"  # the sampling job
    TOPUP = "topup"  # the balance right after a top-up landed (carries the credit)
    LIVE = "live"  # a tenant or the landlord asked for the balance


@dataclass(frozen=True)
class Reading:
    meter_id: str
    at: datetime  # aware UTC
    balance: Decimal | None  # in the meter's unit: KES for money meters, kWh for energy meters
    source: ReadingSource = ReadingSource.SAMPLE
    energy_total: Decimal | None = None  # kWh consumed so far, where the profile has a consumption counter
    credit: Decimal | None = None  # for a top-up reading: what the top-up added, in the balance's unit


@dataclass(frozen=True)
class DailyUsage:
    """One meter's Nairobi calendar day. `consumption` is None when the day is not covered by readings
    (the meter was offline): no number rather than a false one."""

    meter_id: str
    day: date
    consumption: Decimal | None
    credits: Decimal = Decimal(0)  # top-ups applied by LipaMeter
    manual_credits: Decimal = Decimal(0)  # rises no top-up explains: credit added at the meter itself
    first_balance: Decimal | None = None
    last_balance: Decimal | None = None
    covered_s: int = 0  # seconds of the day covered by consecutive readings
    readings: int = 0


@dataclass
class MeterUsage:
    """Per meter: the landlord's fixed threshold (None: about two days of its own use), the next read."""

    meter_id: str
    threshold: Decimal | None = None
    next_read_at: datetime | None = None
    rolled_until: date | None = None


@dataclass
class TenantAlert:
    """Per tenant and meter: their own threshold or opt-out, and what they were told since the last top-up."""

    tenant_id: str
    meter_id: str
    enabled: bool = True
    threshold: Decimal | None = None
    low_sent_at: datetime | None = None
    zero_sent_at: datetime | None = None
