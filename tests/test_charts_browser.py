"""The dashboard's charts and statement links in headless Chromium, against the real app: a month of
history (payments, top-ups, readings) written before the browser starts, then the overview's money and
outcome charts, a meter's use and balance charts with its top-ups marked, a meter never read ("no
readings yet"), the same on a phone, and statement downloads from the meter and ledger pages.
Screenshots go to test-artifacts/screenshots/ (20-*). Fixtures from test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest

from core.payments.model import Channel, Payment, PaymentStatus
from core.shared.clock import NAIROBI
from core.topups.model import TopUp, TopUpStatus
from core.usage.model import Reading, ReadingSource
from storage.db import create_engine
from storage.uow import SqlUnitOfWork
from tests.admin_helpers import start_stack
from tests.test_dashboard_browser import chromium, context, log_in, page, shot  # noqa: F401  (fixtures)


async def _history(database_url: str) -> None:
    """30 days of meter A101: a balance falling with the hours of the day, a manual top-up each week,
    a payment most days."""
    now = datetime.now(UTC)
    engine = create_engine(database_url)
    try:
        async with SqlUnitOfWork(engine) as uow:
            meter = await uow.meters.get_by_number("A101")
            # Build the month, then shift it so that it ends near the sandbox meter's KES 100: the live
            # read the meter page makes is one more reading, and a jump would look like a huge use.
            series, balance, at = [], D(0), now - timedelta(days=29)
            while at < now - timedelta(minutes=5):
                local = at.astimezone(NAIROBI)
                credit = D(250) if local.weekday() == 0 and 9 <= local.hour < 12 else None
                balance += (credit or 0) - (D(12) if 18 <= local.hour <= 23 else D(2))
                series.append((at, balance, credit))
                at += timedelta(hours=3)
            shift = max(D(110) - series[-1][1], D(10) - min(b for _, b, _ in series))  # never below zero
            for at, balance, credit in series:
                await uow.usage.add_reading(Reading(meter_id=meter.id, at=at, balance=balance + shift,
                                                    source=ReadingSource.TOPUP if credit else ReadingSource.SAMPLE,
                                                    credit=credit))
                if credit:
                    await uow.topups.add(TopUp(id=f"hist-t-{at:%m%d}", meter_id=meter.id, amount=credit, created_at=at,
                                               updated_at=at, status=TopUpStatus.APPLIED, applied_at=at,
                                               applied_by="boss", reason="weekly top-up"))
            for day in range(28, 0, -1):
                if day % 4 == 3:
                    continue  # some days without money
                paid_at = now - timedelta(days=day, hours=2)
                await uow.payments.add(Payment(
                    id=f"hist-p-{day}", amount=100 + 50 * (day % 5), phone="254712345678", meter_id=meter.id,
                    channel=Channel.USSD, created_at=paid_at, updated_at=paid_at, status=PaymentStatus.COMPLETED,
                    mpesa_receipt=f"SKH{day:04d}"))
            await uow.commit()
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def stack(chromium, tmp_path_factory, sqlite_template):
    path = tmp_path_factory.mktemp("charts") / "charts.db"
    shutil.copy(sqlite_template, path)
    stack = start_stack(f"sqlite+aiosqlite:///{path}")
    asyncio.run(_history(stack.database_url))  # before Playwright's loop starts on this thread
    yield stack
    stack.stop()


def test_overview_and_meter_charts(page, stack):
    paid = stack.pay(amount=250)  # today's money, and a top-up applied now (a marker at the right end)
    assert paid.status_code == 200, paid.text
    stack.wait_for(paid.json()["paymentId"], lambda p: p["topUpStatus"] == "APPLIED", timeout=20)
    log_in(page, stack, "boss")
    page.wait_for_url(f"{stack.url}/admin")
    money = page.locator("#chart-money svg.chart")
    assert money.count() == 1
    assert page.locator("#chart-money rect.bar").count() >= 20  # one a day with money
    assert "KES 250" in page.locator("#chart-money rect.bar title").last.text_content()
    outcomes = page.locator("#chart-outcomes rect.bar.applied title")
    assert outcomes.count() == 1 and "applied:" in outcomes.first.text_content()
    assert money.bounding_box()["height"] > 120  # drawn, not a collapsed frame
    shot(page, "20-overview-charts")

    page.goto(f"{stack.url}/admin/meters/A101")
    assert page.locator("#chart-use rect.bar").count() >= 25  # a bar for each day with readings
    assert page.locator("#chart-balance polyline.line").count() == 1
    assert page.locator("#chart-balance path.mark").count() >= 5  # four weekly top-ups and today's payment
    assert "top-up KES 250" in page.locator("#chart-balance path.mark title").first.text_content()
    assert "KES a day" in page.locator("#chart-use figcaption").inner_text()
    shot(page, "21-meter-charts")

    page.goto(f"{stack.url}/admin/meters/B201")
    assert page.locator("#chart-use .chart-empty").inner_text().startswith("No readings yet")
    assert page.locator("#chart-balance .chart-empty").count() == 1
    assert page.locator("#chart-use svg").count() == 0
    shot(page, "22-meter-no-readings")


def test_charts_fit_a_phone(page, stack):
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, stack, "boss")
    page.wait_for_url(f"{stack.url}/admin")
    for path, name, chart in (("/admin", "23-phone-overview-charts", "#chart-money svg"),
                              ("/admin/meters/A101", "24-phone-meter-charts", "#chart-balance svg")):
        page.goto(stack.url + path)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
        box = page.locator(chart).bounding_box()
        assert 300 <= box["width"] <= 390  # the chart takes the phone's width, so its text keeps its size
        page.locator(chart).scroll_into_view_if_needed()
        shot(page, name)


def test_statement_downloads_from_meter_and_ledger(page, stack):
    log_in(page, stack, "watcher")  # reading statements needs no admin rights
    page.wait_for_url(f"{stack.url}/admin")
    page.goto(f"{stack.url}/admin/meters/A101")
    month = datetime.now(NAIROBI).strftime("%Y-%m")
    with page.expect_download() as pdf:
        page.locator(f"a[href='/admin/statement.pdf?month={month}&meter=A101']").click()
    assert pdf.value.suggested_filename == f"lipameter-statement_{month}_A101.pdf"
    assert Path(pdf.value.path()).read_bytes()[:5] == b"%PDF-"
    page.goto(f"{stack.url}/admin/ledger")
    shot(page, "25-ledger-statements")
    with page.expect_download() as csv:
        page.get_by_role("button", name="CSV").click()
    assert csv.value.suggested_filename == f"lipameter-statement_{month}_property.csv"
    text = Path(csv.value.path()).read_text(encoding="utf-8")
    assert text.startswith("meter,kind,date,reference") and "ALL,check,,,credited <= paid: ok" in text
    page.goto(f"{stack.url}/admin/statement.csv?month=2999-01")
    assert "has not begun yet" in page.locator("main").inner_text()
    page.goto(f"{stack.url}/admin/statement.pdf?month={month}&meter=NOPE")
    assert "no meter 'NOPE'" in page.locator("main").inner_text()
