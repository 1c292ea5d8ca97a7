"""Consumption from readings, and the numbers derived from it. Pure.

Between two consecutive readings a, b of one meter:
- credits = what LipaMeter's top-ups added in (a.at, b.at] (carried by top-up readings);
- consumption = the energy total's rise when both readings carry one and the balance is in kWh, else
  a.balance + credits - b.balance (the balance drops by what was used and rises by what was credited);
- a balance that rose by more than the credits explain was credited at the meter itself (a token typed
  on its keypad, the landlord's app): that rise is a *manual credit*, never negative consumption.
An interval longer than MAX_GAP (the meter was offline, the sampler was stopped) says how much was used
over the gap but not on which day: it is left out of the daily numbers, so an offline week shows as no
data, not as a week of zeros followed by one huge day. Otherwise an interval is split over the Nairobi
calendar days it spans, in proportion to time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from core.shared.clock import NAIROBI
from core.usage.model import DailyUsage, Reading

MAX_GAP = timedelta(hours=12)
DAY_S = 86_400
MIN_HISTORY_S = 3 * DAY_S  # days left is said only with at least 3 days of readings
AVERAGE_OVER_DAYS = 14
ZERO = Decimal(0)
QUANTUM = Decimal("0.0001")  # the tables' Numeric(18, 4)


def nairobi_day(at: datetime) -> date:
    return at.astimezone(NAIROBI).date()


def day_start(day: date) -> datetime:
    """Midnight of a Nairobi day, as an aware datetime."""
    return datetime.combine(day, time(0), tzinfo=NAIROBI)


@dataclass
class _Day:
    consumption: Decimal = ZERO
    credits: Decimal = ZERO
    manual: Decimal = ZERO
    covered_s: float = 0.0
    readings: int = 0
    first_balance: Decimal | None = None
    last_balance: Decimal | None = None
    seen: bool = False


@dataclass
class _Days:
    meter_id: str
    days: dict[date, _Day] = field(default_factory=dict)

    def at(self, day: date) -> _Day:
        return self.days.setdefault(day, _Day())

    def spread(self, start: datetime, end: datetime, amount: Decimal) -> None:
        """`amount` used over [start, end], split over the Nairobi days it spans."""
        total_s = (end - start).total_seconds()
        cursor = start
        while cursor < end:
            boundary = min(end, day_start(nairobi_day(cursor) + timedelta(days=1)))
            seconds = (boundary - cursor).total_seconds()
            entry = self.at(nairobi_day(cursor))
            entry.covered_s += seconds
            entry.consumption += amount * Decimal(seconds) / Decimal(total_s) if total_s else ZERO
            entry.seen = True
            cursor = boundary


def _interval(a: Reading, b: Reading, credits: Decimal, use_energy_total: bool) -> tuple[Decimal, Decimal]:
    """(consumption, manual credit) between two balance readings."""
    if a.balance is None or b.balance is None:  # an unread balance tells nothing about the interval
        return ZERO, ZERO
    if use_energy_total and a.energy_total is not None and b.energy_total is not None \
            and b.energy_total >= a.energy_total:
        used = b.energy_total - a.energy_total
        manual = b.balance - a.balance - credits + used
        return used, max(manual, ZERO)
    used = a.balance + credits - b.balance
    return (used, ZERO) if used >= 0 else (ZERO, -used)


def daily_usage(meter_id: str, readings: Iterable[Reading], *, use_energy_total: bool = False,
                since: date | None = None) -> list[DailyUsage]:
    """Per Nairobi day, oldest first, from readings in any order. Days before `since` are left out
    (they are already rolled up). A day no reading covers is absent."""
    ordered = sorted(readings, key=lambda r: r.at)
    days, previous, pending_credit = _Days(meter_id), None, ZERO
    for reading in ordered:
        day = days.at(nairobi_day(reading.at))
        day.readings += 1
        if reading.credit:
            day.credits += reading.credit
            pending_credit += reading.credit
        if reading.balance is None:
            continue
        if day.first_balance is None:
            day.first_balance = reading.balance
        day.last_balance = reading.balance
        day.seen = True
        if previous is not None:
            used, manual = _interval(previous, reading, pending_credit, use_energy_total)
            day.manual += manual
            if reading.at - previous.at <= MAX_GAP:
                days.spread(previous.at, reading.at, used)
        previous, pending_credit = reading, ZERO
    return [_finish(meter_id, day, entry) for day, entry in sorted(days.days.items())
            if entry.seen and (since is None or day >= since)]


def _finish(meter_id: str, day: date, entry: _Day) -> DailyUsage:
    covered = round(entry.covered_s)
    return DailyUsage(meter_id=meter_id, day=day,
                      consumption=entry.consumption.quantize(QUANTUM) if covered else None,
                      credits=entry.credits, manual_credits=entry.manual.quantize(QUANTUM),
                      first_balance=entry.first_balance, last_balance=entry.last_balance,
                      covered_s=covered, readings=entry.readings)


def merge_days(rolled: Iterable[DailyUsage], recent: Iterable[DailyUsage]) -> list[DailyUsage]:
    """Rolled-up days and days derived from raw readings, one row a day (the raw ones win)."""
    by_day = {row.day: row for row in rolled}
    by_day.update({row.day: row for row in recent})
    return [by_day[day] for day in sorted(by_day)]


def average_daily_use(days: Iterable[DailyUsage], *, today: date,
                      over_days: int = AVERAGE_OVER_DAYS) -> Decimal | None:
    """Use per 24 hours over the covered time of the last `over_days` days; None under 3 days covered."""
    start = today - timedelta(days=over_days)
    covered, used = 0, ZERO
    for row in days:
        if row.day >= start and row.consumption is not None and row.covered_s:
            covered += row.covered_s
            used += row.consumption
    if covered < MIN_HISTORY_S:
        return None
    return used * DAY_S / covered


def days_left(balance: Decimal | None, average: Decimal | None) -> int | None:
    """Whole days the balance lasts at the usual use; None when unknown (no history, no use, no balance)."""
    if balance is None or average is None or average <= 0:
        return None
    return int(max(balance, ZERO) / average)


def hours_left(balance: Decimal | None, average: Decimal | None) -> Decimal | None:
    if balance is None or average is None or average <= 0:
        return None
    return max(balance, ZERO) * 24 / average
