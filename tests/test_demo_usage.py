"""`lipameter demo`'s month of simulated readings: shaped like the sandbox meters' use, ending at their
balance now, stored and rolled up like real sampling, so days left and the daily numbers are there."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.admin.registry import AddMeter, add_meter
from core.usage.derive import daily_usage, nairobi_day
from core.usage.model import ReadingSource
from core.usage.service import summarise
from tests.stack import with_container
from web.demo_usage import backfill, simulated_past

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def test_a_simulated_month_ends_at_the_balance_now_and_stays_positive():
    readings = simulated_past("m1", balance_now=Decimal(150), rate_kw=Decimal("0.2"), price=Decimal(25), now=NOW)
    assert len(readings) == 30 * 24 + 1 and readings[-1].at == NOW and readings[-1].balance == Decimal(150)
    assert readings[0].at == NOW - timedelta(days=30)
    assert all(r.balance > 0 for r in readings) and all(r.source is ReadingSource.SAMPLE for r in readings)
    assert all(b.at - a.at == timedelta(hours=1) for a, b in itertools.pairwise(readings))
    days = daily_usage("m1", readings)
    whole = [d for d in days if d.covered_s == 86_400]
    assert len(whole) >= 29
    # About 0.2 kW x 24 h x KES 25 a day (each day +-25%), and credit added every few days.
    assert all(Decimal(80) <= d.consumption <= Decimal(160) for d in whole)
    assert 5 <= sum(1 for d in days if d.manual_credits > 0) <= 15
    # The evening uses more than the night: the hour ending 20:00 Nairobi (17 UTC) against the one ending 03:00.
    drops = {0: Decimal(0), 17: Decimal(0)}
    for a, b in itertools.pairwise(readings):
        if b.at.hour in drops and b.balance < a.balance:  # not an hour with credit added
            drops[b.at.hour] += a.balance - b.balance
    assert drops[17] > 4 * drops[0]


def test_kwh_meters_get_a_kwh_history():
    readings = simulated_past("m2", balance_now=Decimal(12), rate_kw=Decimal("0.2"), price=None, now=NOW)
    used = [d.consumption for d in daily_usage("m2", readings) if d.covered_s == 86_400]
    assert all(Decimal("3.5") <= u <= Decimal("6.5") for u in used)


def test_backfill_stores_and_rolls_up_once(database_url):
    async def go(c):
        await add_meter(AddMeter(number="D1", name="Demo", device_id="dev-d1"), uow=c.uow())
        meters = {"D1": (Decimal(150), Decimal("0.2"), Decimal(25)), "NOPE": (Decimal(1), Decimal(1), None)}
        assert await backfill(c, meters) == 1
        assert await backfill(c, meters) == 0  # a second demo run on the same database adds nothing
        async with c.uow() as uow:
            meter = await uow.meters.get_by_number("D1")
            rolled = await uow.usage.daily(meter.id)
            raw = await uow.usage.readings(meter.id)
            summary = await summarise(uow, meter, None, now=c.clock.now())
        return rolled, raw, summary

    rolled, raw, summary = with_container(database_url, go)
    today = nairobi_day(datetime.now(UTC))
    assert 27 <= len(rolled) <= 30 and rolled[-1].day < today - timedelta(days=0)
    assert len(raw) <= 3 * 24  # the older readings were rolled up into daily rows and pruned
    assert summary.balance == Decimal(150) and summary.average is not None and summary.days_left in (0, 1, 2)
