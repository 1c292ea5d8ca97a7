"""Consumption derivation, days left, the call budget's arithmetic and the alert decisions: pure."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest

from core.jobs.kinds import AlertKind
from core.usage.alerts import decide, parse_quiet_hours, quiet_until
from core.usage.budget import take
from core.usage.derive import average_daily_use, daily_usage, days_left
from core.usage.model import Reading, ReadingSource, TenantAlert
from core.usage.schedule import read_every_s

# 2026-11-10 00:00 Nairobi is 2026-11-09 21:00 UTC.
MIDNIGHT = datetime(2026, 11, 9, 21, 0, tzinfo=UTC)


def hourly(start: datetime, balance: D, per_hour: D, hours: int, meter: str = "m") -> list[Reading]:
    return [Reading(meter, start + timedelta(hours=h), balance - per_hour * h) for h in range(hours + 1)]


def test_balance_drops_are_consumption_per_nairobi_day():
    days = daily_usage("m", hourly(MIDNIGHT, D(500), D(2), 48))
    assert [(d.day, d.consumption) for d in days] == [(date(2026, 11, 10), D(48)), (date(2026, 11, 11), D(48)),
                                                      (date(2026, 11, 12), None)]
    assert days[0].covered_s == 86_400 and days[0].first_balance == D(500) and days[0].last_balance == D(454)


def test_a_top_up_is_a_credit_not_negative_use():
    readings = hourly(MIDNIGHT, D(100), D(2), 4)  # 100 .. 92 at 04:00
    readings.append(Reading("m", MIDNIGHT + timedelta(hours=5), D(290), ReadingSource.TOPUP, credit=D(200)))
    readings.append(Reading("m", MIDNIGHT + timedelta(hours=6), D(288)))
    [day] = daily_usage("m", readings)
    assert day.consumption == D(12) and day.credits == D(200) and day.manual_credits == 0


def test_a_jump_up_without_a_top_up_is_a_manual_credit():
    readings = hourly(MIDNIGHT, D(100), D(2), 3)  # 94 at 03:00
    readings.append(Reading("m", MIDNIGHT + timedelta(hours=4), D(144)))  # +50 typed in at the meter
    [day] = daily_usage("m", readings)
    assert day.manual_credits == D(50) and day.consumption == D(6) and day.credits == 0


def test_offline_for_days_gives_no_numbers_for_those_days():
    before = hourly(MIDNIGHT, D(500), D(1), 3)
    after = hourly(MIDNIGHT + timedelta(days=4), D(380), D(1), 3)
    days = daily_usage("m", before + after)
    assert [d.day for d in days] == [date(2026, 11, 10), date(2026, 11, 14)]  # the days between: no data
    assert [d.consumption for d in days] == [D(3), D(3)]  # the 117 used while offline is on no day
    assert average_daily_use(days, today=date(2026, 11, 14)) is None  # 6 hours covered: too little to say


def test_energy_meters_use_the_energy_total():
    readings = [Reading("m", MIDNIGHT + timedelta(hours=h), D(50) - D("0.5") * h, energy_total=D(10) + D("0.5") * h)
                for h in range(3)]
    readings.append(Reading("m", MIDNIGHT + timedelta(hours=3), D("58.5"), ReadingSource.TOPUP, energy_total=D("11.5"),
                            credit=D(10)))
    [day] = daily_usage("m", readings, use_energy_total=True)
    assert day.consumption == D("1.5") and day.manual_credits == 0


def test_days_left_needs_three_days_of_readings():
    two_days = daily_usage("m", hourly(MIDNIGHT, D(500), D(1), 47))
    assert average_daily_use(two_days, today=date(2026, 11, 12)) is None
    three_days = daily_usage("m", hourly(MIDNIGHT, D(500), D(1), 72))
    average = average_daily_use(three_days, today=date(2026, 11, 13))
    assert average == D(24)
    assert days_left(D(100), average) == 4 and days_left(D(10), None) is None and days_left(D(-5), average) == 0


def test_budget_never_lets_more_than_the_limit_into_any_minute():
    per_minute, now, bucket, granted_at = 30, MIDNIGHT, None, []
    for step in range(3000):  # uneven demand every 0.7 s for 35 minutes
        granted, bucket = take(bucket, want=(step % 7) + 1, per_minute=per_minute, now=now)
        granted_at += [now] * granted
        now += timedelta(seconds=0.7)
    for i, at in enumerate(granted_at):
        in_window = sum(1 for other in granted_at[i:i + 200] if other < at + timedelta(seconds=60))
        assert in_window <= per_minute
    assert len(granted_at) >= 25 * 34  # and used: (limit - burst) a minute, sustained


def test_near_empty_meters_are_read_more_often():
    assert read_every_s(D(500), D(50), 900) == 900
    assert read_every_s(D(90), D(50), 900) == 300
    assert read_every_s(D(40), D(50), 900) == 150
    assert read_every_s(D(40), None, 900) == 900


NOON = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)  # 12:00 Nairobi
NIGHT = datetime(2026, 11, 10, 20, 0, tzinfo=UTC)  # 23:00 Nairobi
QUIET = (21, 7)


def test_low_alert_once_until_topped_up():
    state = TenantAlert("t", "m")
    first = decide(state, balance=D(40), threshold=D(50), average=D(25), now=NOON, quiet=QUIET)
    assert first.send is AlertKind.LOW
    again = decide(first.state, balance=D(30), threshold=D(50), average=D(25), now=NOON, quiet=QUIET)
    assert again.send is None
    wobble = decide(again.state, balance=D(55), threshold=D(50), average=D(25), now=NOON, quiet=QUIET)
    assert wobble.send is None and wobble.state.low_sent_at is not None  # not a top-up: still told
    topped = decide(wobble.state, balance=D(300), threshold=D(50), average=D(25), now=NOON, quiet=QUIET)
    assert topped.state.low_sent_at is None
    assert decide(topped.state, balance=D(45), threshold=D(50), average=D(25), now=NOON, quiet=QUIET).send is AlertKind.LOW


def test_quiet_hours_hold_an_alert_unless_it_runs_out_first():
    state = TenantAlert("t", "m")
    assert decide(state, balance=D(40), threshold=D(50), average=D(25), now=NIGHT, quiet=QUIET).send is None
    # 4 KES at 25 a day lasts under 4 hours: out before 07:00, so told now.
    assert decide(state, balance=D(4), threshold=D(50), average=D(25), now=NIGHT, quiet=QUIET).send is AlertKind.LOW
    assert decide(state, balance=D(40), threshold=D(50), average=D(25), now=NIGHT, quiet=None).send is AlertKind.LOW
    assert quiet_until(NIGHT, QUIET) == datetime(2026, 11, 11, 4, 0, tzinfo=UTC)
    assert quiet_until(NOON, QUIET) is None


def test_zero_balance_sends_one_restore_message_and_opt_out_sends_nothing():
    state = TenantAlert("t", "m")
    zero = decide(state, balance=D(0), threshold=D(50), average=D(25), now=NIGHT, quiet=QUIET)
    assert zero.send is AlertKind.ZERO
    assert decide(zero.state, balance=D(0), threshold=D(50), average=D(25), now=NIGHT, quiet=QUIET).send is None
    off = TenantAlert("t", "m", enabled=False)
    assert decide(off, balance=D(0), threshold=D(50), average=D(25), now=NOON, quiet=QUIET).send is None
    assert decide(off, balance=D(10), threshold=D(50), average=D(25), now=NOON, quiet=QUIET).send is None


def test_offline_meter_gets_no_alert():
    assert decide(TenantAlert("t", "m"), balance=None, threshold=D(50), average=None, now=NOON, quiet=QUIET).send is None


@pytest.mark.parametrize("value", ["21", "25-7", "a-b", "7-7", "²-3"])
def test_bad_quiet_hours_are_refused(value):
    with pytest.raises(ValueError):
        parse_quiet_hours(value)


def test_quiet_hours_parse():
    assert parse_quiet_hours("21-7") == (21, 7) and parse_quiet_hours("") is None
