"""Issue 15 for tenants, through the real app: days left on the USSD balance screen and in the receipt,
and the tenant's own low-balance alert (level, off) set from USSD into tenant_alerts, on SQLite and
PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.usage.model import Reading, ReadingSource
from tests.stack import Stack, with_container
from tests.ussd_helpers import OTIENO, WANJIKU, Phone, seed_ussd
from ussd.hop import UssdConfig
from web.bootstrap import Container


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url, ussd_config=UssdConfig(push_delay_s=0.2))
    seed_ussd(database_url)
    yield stack
    stack.stop()


def seed_history(database_url: str, number: str, *, per_day: int, days: int = 4, end: int = 100) -> None:
    """Hourly readings of `number` falling `per_day` KES a day to `end` (the sandbox's A101 balance), the
    last a minute ago."""

    async def go(c: Container) -> None:
        now = datetime.now(UTC) - timedelta(minutes=1)
        async with c.uow() as uow:
            meter = await uow.meters.get_by_number(number)
            for hour in range(days * 24, -1, -1):
                balance = Decimal(end + per_day * hour / 24).quantize(Decimal("0.01"))
                await uow.usage.add_reading(Reading(meter.id, now - timedelta(hours=hour), balance,
                                                    ReadingSource.SAMPLE))
            await uow.commit()

    with_container(database_url, go)


def alert_row(stack: Stack, phone: str, number: str):
    rows = stack.sql("SELECT a.enabled, a.threshold FROM tenant_alerts a JOIN tenants t ON t.id = a.tenant_id "
                     "JOIN meters m ON m.id = a.meter_id WHERE t.phone = :p AND m.number = :n",
                     p=phone.lstrip("+"), n=number)
    return rows[0] if rows else None


def test_ussd_balance_says_days_left_and_the_tenant_sets_their_alerts(stack):
    seed_history(stack.database_url, "A101", per_day=20)
    wanjiku = Phone(stack.url, WANJIKU)
    wanjiku.dial()
    wanjiku.send("2")
    balance = wanjiku.send("1")  # A101
    assert "\nKES 100 now\nabout 5 days at your usual use\n" in balance and "\n2. Alerts\n" in balance, balance
    alerts = wanjiku.send("2")
    # Not set by anyone yet: the meter's own level, about two days of its use (2 x KES 20).
    assert alerts == ("CON Low-balance alerts:\nMeter A101 Flat A1\nOn, below KES 40\n1. Change level\n"
                      "2. Turn off\n0. Back 00. Home"), alerts
    assert alert_row(stack, WANJIKU, "A101") is None
    assert wanjiku.send("1").startswith("CON Alert me when the balance is below (KES, 1-100,000):")
    assert wanjiku.send("50.5").startswith("CON Whole KES 1-100,000 only.\n")
    assert alert_row(stack, WANJIKU, "A101") is None  # a bad level changes nothing
    saved = wanjiku.send("50")
    assert saved.startswith("CON Alerts saved.\nLow-balance alerts:\n") and "On, below KES 50\n" in saved
    assert "\n3. Automatic level\n" in saved
    row = alert_row(stack, WANJIKU, "A101")
    assert row.enabled in (True, 1) and Decimal(row.threshold) == 50
    off = wanjiku.send("2")
    assert "\nOff\n" in off and "\n2. Turn on\n" in off
    row = alert_row(stack, WANJIKU, "A101")
    assert row.enabled in (False, 0) and Decimal(row.threshold) == 50  # the level is kept for when it is on again
    assert wanjiku.send("3").startswith("CON Alerts saved.")  # back to the meter's own level
    assert alert_row(stack, WANJIKU, "A101").threshold is None
    # Another tenant's setting, and Wanjiku's other meter, are untouched.
    assert alert_row(stack, OTIENO, "B201") is None and alert_row(stack, WANJIKU, "A102") is None


def test_swahili_alerts_and_no_days_left_without_history(stack):
    otieno = Phone(stack.url, OTIENO)
    otieno.dial()
    balance = otieno.send("2")  # B201, his only meter: no readings stored but the live one
    assert balance.startswith("CON Salio\n") and "matumizi" not in balance and "\n2. Arifa\n" in balance
    alerts = otieno.send("2")
    assert alerts.startswith("CON Arifa za salio kidogo:\n") and "Zimewashwa, chini ya matumizi ya siku 2" in alerts
    assert otieno.send("2").startswith("CON Arifa zimehifadhiwa.\n")
    assert alert_row(stack, OTIENO, "B201").enabled in (False, 0)


def test_the_receipt_says_days_left(stack):
    seed_history(stack.database_url, "A101", per_day=20)
    wanjiku = Phone(stack.url, WANJIKU)
    wanjiku.dial()
    assert wanjiku.send("1", "1", "500", "1").startswith("END You will get an M-Pesa prompt")
    deadline = time.monotonic() + 20
    while not stack.sms.messages(to=WANJIKU):
        assert time.monotonic() < deadline, "no SMS receipt"
        time.sleep(0.05)
    [sms] = stack.sms.messages(to=WANJIKU)
    assert "credited" in sms.message and " New balance KES " in sms.message
    assert " That is about " in sms.message and sms.message.endswith(" days at your usual use."), sms.message
    assert "New balance KES 600. That is about 30 days at your usual use." in sms.message
