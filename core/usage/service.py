"""Use cases over readings: store one, sample the meters that are due within the shared Tuya budget,
summarise a meter's use, and roll old readings up into daily rows."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from core.meters.model import Meter
from core.meters.profiles import DpSpec, MeterProfile
from core.ports import Clock, MeterGateway, UnitOfWork
from core.shared.errors import InvalidInput, UpstreamError
from core.topups.decision import MeterReading, read_meter
from core.usage.derive import (
    AVERAGE_OVER_DAYS,
    average_daily_use,
    daily_usage,
    day_start,
    days_left,
    merge_days,
    nairobi_day,
)
from core.usage.model import DailyUsage, Reading, ReadingSource
from core.usage.schedule import next_read_at

log = logging.getLogger("lipameter.usage")

TUYA_BUDGET = "tuya"
SAMPLING_RUN = "sampling"
RAW_KEPT_DAYS = 2  # today and yesterday stay raw; older days are rolled up
THRESHOLD_DAYS = 2  # the default threshold: about two days of the meter's own use
OFFLINE_RETRY_S = 1800.0


@dataclass(frozen=True)
class SamplingConfig:
    every_s: float = 900.0  # READINGS_EVERY_S
    calls_per_minute: int = 60  # TUYA_CALLS_PER_MINUTE
    batch: int = 50  # meters one run reads at most


def uses_energy_total(profile: MeterProfile) -> bool:
    """The balance is in kWh and the meter counts kWh used: its counter's rise is the consumption."""
    return not profile.read_money_balance and bool(profile.read_consumption_total)


def balance_of(profile: MeterProfile, reading: MeterReading) -> Decimal | None:
    return reading.money_balance if profile.read_money_balance else reading.energy_balance


def unit_of(profile: MeterProfile | None) -> str:
    return "KES" if profile is None or profile.read_money_balance else "kWh"


def reading_from(meter: Meter, profile: MeterProfile, reading: MeterReading, *, at: datetime,
                 source: ReadingSource, credit: Decimal | None = None) -> Reading:
    return Reading(meter_id=meter.id, at=at, balance=balance_of(profile, reading), source=source,
                   energy_total=reading.consumption_total, credit=credit)


@dataclass(frozen=True)
class UsageSummary:
    meter_id: str
    days: list[DailyUsage]  # oldest first
    average: Decimal | None  # use per day, None under 3 days of readings
    balance: Decimal | None
    days_left: int | None
    threshold: Decimal | None  # effective: the landlord's fixed one, else about two days of use
    last_reading_at: datetime | None


async def summarise(uow: UnitOfWork, meter: Meter, profile: MeterProfile | None, *, now: datetime,
                    history_days: int = AVERAGE_OVER_DAYS) -> UsageSummary:
    """Inside an open unit of work: the meter's daily use, average and days left."""
    today = nairobi_day(now)
    settings = await uow.usage.meter(meter.id)
    since = today - timedelta(days=history_days)
    rolled = await uow.usage.daily(meter.id, since=since)
    raw = await uow.usage.readings(meter.id, since=day_start(since))
    energy = uses_energy_total(profile) if profile else False
    recent = daily_usage(meter.id, raw, use_energy_total=energy, since=max(settings.rolled_until or since, since))
    days = merge_days(rolled, recent)
    average = average_daily_use(days, today=today, over_days=history_days)
    latest = next((r for r in reversed(raw) if r.balance is not None), None)
    balance = latest.balance if latest else meter.last_balance
    threshold = settings.threshold
    if threshold is None and average is not None:
        threshold = (average * THRESHOLD_DAYS).quantize(Decimal("0.01"))
    return UsageSummary(meter.id, days, average, balance, days_left(balance, average), threshold,
                        latest.at if latest else None)


async def record(uow_factory: Callable[[], UnitOfWork], reading: Reading) -> None:
    """Store one reading (a live read's), unless a top-up is landing on the meter right now: a balance seen
    before its top-up reading would look like a manual credit."""
    async with uow_factory() as uow:
        if reading.source is not ReadingSource.TOPUP and await uow.usage.topup_in_flight(reading.meter_id):
            return
        await uow.usage.add_reading(reading)
        await uow.commit()


AfterReading = Callable[[Meter, "UsageSummary"], Awaitable[None]]


@dataclass
class Sampler:
    """One sampling run: the due meters, as many as the shared budget grants, one status call each."""

    uow: Callable[[], UnitOfWork]
    meters: MeterGateway
    profiles: Mapping[str, MeterProfile]
    clock: Clock
    config: SamplingConfig
    after_reading: AfterReading | None = None  # the alerts' check

    async def run(self) -> int:
        now = self.clock.now()
        async with self.uow() as uow:
            due = await uow.usage.due_meters(now, limit=self.config.batch,
                                             first_after=now - timedelta(seconds=self.config.every_s))
            granted = await uow.usage.take_calls(TUYA_BUDGET, want=len(due), per_minute=self.config.calls_per_minute,
                                                 now=now) if due else 0
            await uow.commit()
        for meter_id in due[:granted]:
            await self._sample(meter_id)
        if granted < len(due):
            log.info("Tuya budget: read %d of %d due meters; the rest wait for the next run", granted, len(due))
        return granted

    async def _sample(self, meter_id: str) -> None:
        async with self.uow() as uow:
            meter = await uow.meters.get(meter_id)
            busy = await uow.usage.topup_in_flight(meter_id)
        profile = self.profiles.get(meter.profile) if meter else None
        if meter is None or profile is None or busy:
            await self._reschedule(meter_id, self.clock.now() + timedelta(seconds=60 if busy else self.config.every_s))
            return
        try:
            status = await self.meters.status(meter.device_id)
            reading = read_meter(profile, {c: DpSpec.from_dict(s) for c, s in meter.dp_specs.items()}, status)
        except (UpstreamError, InvalidInput) as failure:
            # Offline or unreadable: no reading (so no numbers and no alert made up), asked again later.
            log.info("meter %s not read: %s", meter.number, getattr(failure, "message", failure))
            await self._reschedule(meter_id, self.clock.now() + timedelta(seconds=OFFLINE_RETRY_S))
            return
        now = self.clock.now()
        async with self.uow() as uow:
            await uow.usage.add_reading(reading_from(meter, profile, reading, at=now, source=ReadingSource.SAMPLE))
            meter.last_balance, meter.last_energy, meter.last_balance_at = (
                reading.money_balance, reading.energy_balance, now)
            await uow.meters.save(meter)
            summary = await summarise(uow, meter, profile, now=now)
            settings = await uow.usage.meter(meter_id)
            settings.next_read_at = next_read_at(now, summary.balance, summary.threshold, self.config.every_s)
            await uow.usage.save_meter(settings)
            await uow.commit()
        if self.after_reading is not None:
            await self.after_reading(meter, summary)

    async def _reschedule(self, meter_id: str, at: datetime) -> None:
        async with self.uow() as uow:
            settings = await uow.usage.meter(meter_id)
            settings.next_read_at = at
            await uow.usage.save_meter(settings)
            await uow.commit()


async def claim_sampling_run(uow: UnitOfWork, *, now: datetime, every_s: float) -> bool:
    """The sweep of every worker asks; one of them gets each turn (then it enqueues the sampling job)."""
    async with uow:
        claimed = await uow.usage.claim_run(SAMPLING_RUN, now=now, next_run_at=now + timedelta(seconds=every_s))
        await uow.commit()
    return claimed


async def roll_up(uow_factory: Callable[[], UnitOfWork], profiles: Mapping[str, MeterProfile], *, now: datetime,
                  kept_days: int = RAW_KEPT_DAYS) -> int:
    """Days older than `kept_days` go from raw readings into meter_daily; their readings are pruned (but the
    newest, where the next interval starts). Returns the number of day rows written."""
    cutoff_day = nairobi_day(now) - timedelta(days=kept_days - 1)
    cutoff = day_start(cutoff_day)
    async with uow_factory() as uow:
        meter_ids = await uow.usage.meters_with_readings_before(cutoff)
    written = 0
    for meter_id in meter_ids:
        async with uow_factory() as uow:
            meter = await uow.meters.get(meter_id)
            settings = await uow.usage.meter(meter_id)
            profile = profiles.get(meter.profile) if meter else None
            # The first reading after the cutoff closes the interval that crosses it.
            raw = await uow.usage.readings(meter_id, until=cutoff + timedelta(days=1))
            rows = [row for row in daily_usage(meter_id, raw, use_energy_total=bool(profile and uses_energy_total(profile)),
                                               since=settings.rolled_until) if row.day < cutoff_day]
            await uow.usage.save_days(rows)
            await uow.usage.prune_readings(meter_id, before=cutoff)
            settings.rolled_until = cutoff_day
            await uow.usage.save_meter(settings)
            await uow.commit()
        written += len(rows)
    return written


def month_bounds(month: date) -> tuple[datetime, datetime]:
    first = month.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return day_start(first), day_start(following)


MAX_THRESHOLD = Decimal(1_000_000)
THRESHOLD_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")


def parse_threshold(value: object) -> Decimal | None:
    """A threshold in the meter's unit: a positive number with at most 2 decimals, or "auto"/"" for the
    default (about two days of the meter's own use)."""
    text = str(value if value is not None else "").strip().lower()
    if text in ("", "auto", "default"):
        return None
    # Plain digits and a point, as typed on a form: no "1e3", "NaN", "+5" or other digits than ASCII.
    if not THRESHOLD_TEXT.fullmatch(text):
        raise InvalidInput(f"threshold {text[:20]!r} is not a number", code="invalid_threshold")
    number = Decimal(text)
    if not number.is_finite() or number <= 0 or number > MAX_THRESHOLD or number != number.quantize(Decimal("0.01")):
        raise InvalidInput("the threshold must be above 0, at most 1,000,000, with up to 2 decimals",
                           code="invalid_threshold")
    return number


async def set_meter_threshold(meter_ref: str, value: object, *, actor: str, uow: UnitOfWork, clock: Clock) -> tuple[
        Meter, Decimal | None]:
    """The landlord's fixed low-balance threshold for a meter (None: back to the default), audited."""
    from core.meters.lookup import find_meter

    threshold = parse_threshold(value)
    async with uow:
        meter = await find_meter(uow, meter_ref)
        settings = await uow.usage.meter(meter.id)
        settings.threshold = threshold
        await uow.usage.save_meter(settings)
        await uow.audit.record(at=clock.now(), actor=actor, action="set_threshold", target=meter.number,
                               reason=None, details={"threshold": str(threshold) if threshold is not None else "auto"})
        await uow.commit()
    return meter, threshold
