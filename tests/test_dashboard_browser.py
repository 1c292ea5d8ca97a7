"""The dashboard in headless Chromium (Debian's, driven by Playwright), against the real app and its
sandboxes: a landlord logs in, finds a failed top-up from the overview and retries it until it is
applied; a manual top-up lands on the sandbox meter and in the audit log; a viewer sees no forms; logout.
Screenshots of each page go to test-artifacts/screenshots/. SQLite only: the rules themselves are
tested on both engines in test_admin_http.py.

Mandatory when LIPAMETER_REQUIRE_BROWSER=1 (CI): a missing browser fails instead of skipping."""

from __future__ import annotations

import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from tests.admin_helpers import PASSWORDS, failed_payment, start_stack, wait_until

CHROMIUM = os.environ.get("LIPAMETER_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("LIPAMETER_REQUIRE_BROWSER") == "1"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"


def _unavailable(message: str):
    if REQUIRE:
        pytest.fail(f"browser tests are mandatory here (LIPAMETER_REQUIRE_BROWSER=1): {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        _unavailable(f"playwright is not installed: {error}")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def stack(chromium, tmp_path_factory, sqlite_template):
    path = tmp_path_factory.mktemp("browser") / "dashboard.db"
    shutil.copy(sqlite_template, path)
    stack = start_stack(f"sqlite+aiosqlite:///{path}")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def context(stack, chromium, tmp_path_factory):
    """Started after the Stack: Playwright's sync API keeps an event loop running on this thread, and
    the Stack seeds its database with asyncio.run."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    playwright = sync_playwright().start()
    try:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, headless=True, args=ARGS,
            viewport={"width": 1280, "height": 900})
    except Exception as error:  # a broken install must be visible, not silently skipped in CI
        playwright.stop()
        _unavailable(f"Chromium did not start: {error}")
    yield context
    context.close()
    playwright.stop()


@pytest.fixture
def page(context):
    context.clear_cookies()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    page.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def log_in(page, stack, username: str, password: str | None = None) -> None:
    page.goto(f"{stack.url}/admin/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password or PASSWORDS[username])
    page.get_by_role("button", name="Log in").click()


def reload_until(page, text: str, timeout: float = 15.0) -> None:
    def seen() -> bool:
        page.reload()
        return page.get_by_text(text, exact=True).count() > 0

    wait_until(seen, timeout, what=f"{text!r} on {page.url}")


def test_find_failed_topup_from_overview_and_retry_it(page, stack):
    failed_payment(stack, amount=600)
    page.goto(f"{stack.url}/admin")
    assert "/admin/login" in page.url
    shot(page, "01-login")
    log_in(page, stack, "boss", "not-my-password")
    assert page.get_by_role("alert").inner_text() == "wrong username or password"
    shot(page, "02-login-wrong-password")
    log_in(page, stack, "boss")
    page.wait_for_url(f"{stack.url}/admin")
    assert page.locator("#tile-failed strong").inner_text() == "1"
    shot(page, "03-overview")
    page.click("#tile-failed")
    page.wait_for_url("**/admin/topups?status=failed")
    shot(page, "04-topups-failed")
    page.locator("tbody a[href^='/admin/topups/']").first.click()
    page.wait_for_url("**/admin/payments/*")
    assert page.get_by_text("Tuya error 1106", exact=False).count() > 0
    shot(page, "05-payment-with-failed-topup")
    page.fill("form[action$='/retry'] input[name=reason]", "Tuya permission restored")
    page.get_by_role("button", name="Retry top-up").click()
    assert "queued again" in page.get_by_role("status").inner_text()
    reload_until(page, "applied")
    shot(page, "06-payment-retried-applied")
    assert stack.tuya.total_credits("dev-a101") == 600


def test_manual_topup_reaches_the_meter_and_the_audit_log(page, stack):
    log_in(page, stack, "boss")
    page.wait_for_url(f"{stack.url}/admin")
    page.get_by_role("link", name="Meters", exact=True).click()
    shot(page, "07-meters")
    page.get_by_role("link", name="A101", exact=True).click()
    page.wait_for_url("**/admin/meters/A101")
    shot(page, "08-meter")
    before = stack.tuya.total_credits("dev-a101")
    page.fill("#manual-topup input[name=amount]", "250")
    page.fill("#manual-topup input[name=reason]", "Refund: outage on 27 Nov")
    page.get_by_role("button", name="Top up").click()
    assert "queued" in page.get_by_role("status").inner_text()
    wait_until(lambda: stack.tuya.total_credits("dev-a101") == before + Decimal(250), what="the sandbox meter credit")
    page.get_by_role("link", name="Audit log").click()
    row = page.locator("tbody tr", has_text="manual topup").first
    assert "boss" in row.inner_text() and "Refund: outage on 27 Nov" in row.inner_text()
    shot(page, "09-audit-log")
    for link, name in (("Ledger", "10-ledger"), ("Tenants", "11-tenants"), ("Payments", "12-payments")):
        page.get_by_role("link", name=link, exact=True).click()
        shot(page, name)
    page.get_by_role("link", name="Ledger", exact=True).click()
    assert page.locator("tfoot .badge.ok").count() == 1  # credited never exceeds paid


def test_viewer_sees_no_forms_then_logs_out(page, stack):
    ref = failed_payment(stack, amount=300)
    log_in(page, stack, "watcher")
    page.wait_for_url(f"{stack.url}/admin")
    page.goto(f"{stack.url}/admin/meters/A101")
    assert page.locator("#manual-topup").count() == 0 and page.locator("form[action*='/price']").count() == 0
    shot(page, "13-viewer-meter")
    page.goto(f"{stack.url}/admin/payments/{ref}")
    assert page.get_by_text("Tuya error 1106", exact=False).count() > 0
    assert page.locator("form[action$='/retry']").count() == 0
    shot(page, "14-viewer-payment")
    page.goto(f"{stack.url}/admin/meters")
    assert page.get_by_text("Add a meter").count() == 0
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/admin/login")
    assert page.get_by_role("status").inner_text() == "You are logged out."
    shot(page, "15-logged-out")
    page.goto(f"{stack.url}/admin/meters")
    assert "/admin/login" in page.url


def test_pages_fit_a_phone_screen(page, stack):
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, stack, "boss")
    page.wait_for_url(f"{stack.url}/admin")
    for path, name in (("/admin", "16-phone-overview"), ("/admin/meters/A101", "17-phone-meter"),
                       ("/admin/payments", "18-phone-payments")):
        page.goto(stack.url + path)
        # Wide tables scroll inside their own box; the page itself never scrolls sideways.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
        shot(page, name)
