"""The dashboard's charts, from the read models (storage/charts.py, core's usage summary) to SVG
(web/admin/charts.py): money in per Nairobi day and top-ups by outcome on the overview; a meter's daily
use, balance line and top-ups on its page. 30 days each."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from markupsafe import Markup

from core.shared.money import format_kes
from core.usage.derive import day_start, nairobi_day
from core.usage.service import summarise, unit_of
from storage.charts import applied_topups, balance_points, money_per_day, topups_by_outcome
from web.admin.charts import Bar, Mark, Point, Tick, bar_chart, line_chart, plain
from web.bootstrap import Container

DAYS = 30
OUTCOME_LABELS = {"applied": "applied", "queued": "queued", "failed": "failed", "review": "in review"}


def last_days(today: date, days: int = DAYS) -> list[date]:
    return [today - timedelta(days=days - 1 - i) for i in range(days)]


def _day_label(day: date) -> str:
    return f"{day.day} {day:%b}"


async def overview_charts(container: Container) -> dict[str, Markup]:
    today = nairobi_day(container.clock.now())
    days = last_days(today)
    money = await money_per_day(container.engine, days)
    money_chart = bar_chart(
        [Bar(_day_label(day), value, title=f"{day:%a %d %b}: {format_kes(value)}") for day, value in zip(days, money, strict=False)],
        label="Money in per day, last 30 days (KES)", empty="No payments in the last 30 days.", label_every=7)
    outcomes = await topups_by_outcome(container.engine, since=day_start(days[0]))
    outcome_chart = bar_chart(
        [Bar(OUTCOME_LABELS[name], Decimal(count), kind=name,
             title=f"{OUTCOME_LABELS[name]}: {count} top-up{'s' if count != 1 else ''}, {format_kes(kes)}")
         for name, (count, kes) in outcomes.items()],
        label="Top-ups by outcome, last 30 days", empty="No top-ups in the last 30 days.", values=True)
    return {"money": money_chart, "outcomes": outcome_chart}


def _seconds(at: datetime, origin: datetime) -> float:
    return (at - origin).total_seconds()


async def meter_charts(container: Container, number: str) -> dict:
    """The meter's daily use (bars) and balance (a line with its top-ups marked), in its profile's unit."""
    now = container.clock.now()
    today = nairobi_day(now)
    days = last_days(today)
    async with container.uow() as uow:
        meter = await uow.meters.get_by_number(number)
        profile = container.profiles.get(meter.profile) if meter else None
        summary = await summarise(uow, meter, profile, now=now, history_days=DAYS) if meter else None
    if meter is None:
        return {}
    unit = unit_of(profile)
    used = {row.day: row.consumption for row in summary.days}
    use_chart = bar_chart(
        [Bar(_day_label(day), used.get(day),
             title=f"{day:%a %d %b}: " + (f"{plain(used[day])} {unit}" if used.get(day) is not None else "no readings"))
         for day in days],
        label=f"Daily use, last 30 days ({unit})", empty="No readings yet: daily use shows once the meter is read.",
        unit=unit, label_every=7)
    origin = day_start(days[0])
    points = await balance_points(container.engine, meter.id, since=days[0])
    topups = await applied_topups(container.engine, meter.id, since=origin)
    balance_chart = line_chart(
        [Point(_seconds(at, origin), value) for at, value in points],
        label=f"Balance, last 30 days ({unit}), top-ups marked", empty="No readings yet: no balance to draw.",
        ticks=[Tick(_seconds(day_start(day), origin), _day_label(day)) for day in days[::7]],
        marks=[Mark(_seconds(at, origin), f"top-up {format_kes(amount)}, {at.astimezone(origin.tzinfo):%d %b %H:%M}")
               for at, amount in topups],
        x_range=(0.0, _seconds(now, origin)))
    average = summary.average.quantize(Decimal("0.1")) if summary.average is not None else None
    return {"use": use_chart, "balance": balance_chart, "unit": unit, "topups": len(topups),
            "average": average, "days_left": summary.days_left}
