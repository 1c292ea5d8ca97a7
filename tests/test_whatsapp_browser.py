"""The WhatsApp sandbox's chat page in headless Chromium (Debian's, driven by Playwright), against the
real app: Wanjiku says hi, buys by tapping the list and the buttons, gets the M-Pesa prompt and then
her receipt. Screenshots go to test-artifacts/screenshots/whatsapp-*.png. SQLite only: the rules are
tested on both engines in test_whatsapp_http.py."""

from __future__ import annotations

import shutil

import pytest

from tests.stack import Stack
from tests.test_dashboard_browser import ARGS, SHOTS, chromium  # noqa: F401  (the fixture)


@pytest.fixture
def stack(chromium, tmp_path, sqlite_template):
    shutil.copy(sqlite_template, tmp_path / "whatsapp.db")
    stack = Stack(f"sqlite+aiosqlite:///{tmp_path}/whatsapp.db", whatsapp=True)
    yield stack
    stack.stop()


def test_chat_page_buys_and_shows_the_receipt(stack, chromium, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1000})
            page.set_default_timeout(15_000)
            page.goto(f"{stack._whatsapp_server.url}/sandbox/chat")
            page.fill("#text", "hi")
            page.press("#text", "Enter")
            expect(page.get_by_role("button", name="Buy electricity")).to_be_visible()
            expect(page.locator("#window")).to_have_text("window open")
            page.screenshot(path=str(SHOTS / "whatsapp-menu.png"), full_page=True)

            page.get_by_role("button", name="Buy electricity").click()
            page.get_by_role("button", name="A101 Flat A1").click()
            page.get_by_role("button", name="KES 500").click()
            expect(page.get_by_role("button", name="Pay now")).to_be_visible()
            page.screenshot(path=str(SHOTS / "whatsapp-confirm.png"), full_page=True)

            page.get_by_role("button", name="Pay now").last.click()
            expect(page.get_by_text("Check your phone for the M-Pesa prompt: KES 500")).to_be_visible()
            expect(page.get_by_text("LipaMeter: KES 500")).to_be_visible(timeout=20_000)
            page.screenshot(path=str(SHOTS / "whatsapp-receipt.png"), full_page=True)
        finally:
            browser.close()
    assert [p.channel for p in stack.sql("SELECT channel FROM payments")] == ["whatsapp"]
    assert stack.whatsapp.refused == []
