"""The Telegram bot through the real app: uvicorn, the in-process worker, updates built by the Bot API
sandbox as Telegram builds them and posted to POST /telegram/webhook with the secret, the bot's answers
read back from the sandbox, Daraja, Tuya and SMS sandboxes over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.servers import ServerThread
from tests.stack import TELEGRAM, Stack, settings_env, with_container
from tests.telegram_helpers import TelegramUser
from web.app import create_app
from web.bootstrap import build_container

WARN = "\u26a0\ufe0f "
STALE = "This button is from an earlier message. Please use the latest one."
MENU = ["Buy electricity", "Check balance", "My payments", "Language"]


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url, telegram=True)
    yield stack
    stack.stop()


def count(stack: Stack, table: str, where: str = "1=1") -> int:
    return stack.sql(f"SELECT count(*) AS n FROM {table} WHERE {where}")[0].n


def linked(stack: Stack, **user) -> TelegramUser:
    user = TelegramUser(stack.telegram, **user)
    user.send("/start")
    user.share_contact()
    return user


def data_of(message: dict, label: str) -> str:
    rows = message["reply_markup"]["inline_keyboard"]
    return next(b["callback_data"] for row in rows for b in row if b["text"] == label)


def test_link_by_contact_buy_by_buttons_double_tap_and_receipt(stack):
    user = TelegramUser(stack.telegram)
    assert user.send("/start").startswith("Karibu! I am LipaMeter.")
    assert user.last["keyboard"] == {"keyboard": [[{"text": "Share my phone number", "request_contact": True}]],
                                     "resize_keyboard": True, "one_time_keyboard": True}
    # Someone else's card (forwarded, or typed into the address book) proves nothing about the phone.
    foreign = "That is not your own contact. Please share your own number with the button below."
    assert user.share_contact("254722000111", user_id=424242, sends=1) == [foreign]
    assert user.share_contact("254722000111", user_id=None, sends=1) == [foreign]
    assert user.share_contact("+15551234567", sends=1)[0].startswith("Sorry, LipaMeter works with Kenyan")
    assert count(stack, "tenants", "telegram_user_id IS NOT NULL") == 0

    assert user.share_contact() == ["Thank you, Wanjiku! This Telegram account is now linked to 0712345678.",
                                    "LipaMeter"]
    assert user.sandbox.bot_messages(user.chat_id)[-2]["keyboard"] == {"remove_keyboard": True}
    tenant = stack.sql("SELECT telegram_user_id, telegram_chat_id FROM tenants WHERE phone = '254712345678'")[0]
    assert (tenant.telegram_user_id, tenant.telegram_chat_id) == (user.chat_id, user.chat_id)
    assert user.buttons() == MENU

    assert user.press("Buy electricity") == "Choose meter:"
    assert user.buttons() == ["A101 Flat A1", "Other meter", "Back", "Home"]
    assert user.send("b201") == "Enter amount, KES 10-70,000:\nMeter B201 Shop 1"  # typed under the buttons
    assert user.press("Back") == "Enter meter number:"
    assert user.press("Back") == "Choose meter:"
    assert user.press("A101 Flat A1") == "Enter amount, KES 10-70,000:\nMeter A101 Flat A1"
    assert user.buttons() == ["KES 100", "KES 200", "KES 500", "KES 1,000", "Back", "Home"]
    assert user.press("KES 500") == "Confirm payment:\nMeter A101 Flat A1\nAmount KES 500\nPhone 0712345678"
    confirm = user.last
    started = user.press("Pay now")
    assert started.startswith("Check your phone for the M-Pesa prompt: KES 500 for meter A101, from 0712345678.")
    pressed = user.message(confirm["message_id"])  # what was chosen stays; the keyboard goes
    assert pressed["text"].endswith("\n\n\u00bb Pay now") and "reply_markup" not in pressed
    # A double tap (or a second device still showing the button): answered, never paid twice.
    assert user.press_data(confirm["message_id"], data_of(confirm, "Pay now")) == STALE
    payment = stack.sql("SELECT id, channel, idempotency_key FROM payments")
    assert len(payment) == 1 and payment[0].channel == "telegram"
    assert payment[0].idempotency_key == f"tg:{user.chat_id}:{confirm['message_id']}"

    paid = stack.wait_for(payment[0].id, lambda p: p["topUpStatus"] == "APPLIED", timeout=15)
    receipt = user.wait_for_text("LipaMeter: KES 500")["text"]
    assert f"(M-Pesa {paid['mpesaReceiptNumber']})" in receipt and "Meter A101 credited" in receipt
    assert "New balance KES 600" in receipt
    notes = stack.sql_until("SELECT channel, status FROM notifications WHERE payment_id = :p", 1, p=payment[0].id)
    assert [tuple(n) for n in notes] == [("telegram", "sent")]
    assert stack.sms.messages("254712345678") == []
    assert len(stack.daraja.transactions) == 1
    assert 'lipameter_payments_started_total{channel="telegram"} 1.0' in httpx.get(f"{stack.url}/metrics").text


def test_typed_meter_number_commands_and_bad_input(stack):
    swahili = TelegramUser(stack.telegram, chat_id=5550003, name="Amani", language_code="sw")
    assert swahili.send("habari").startswith("Tafadhali tuma nambari yako ya simu kwanza")
    user = TelegramUser(stack.telegram, chat_id=5550002, name="Baraka", phone="254746000333")
    assert user.send("/balance").startswith("Please share your phone number first")
    user.share_contact()  # a phone we have never seen becomes a tenant, with no meters linked
    tenant = stack.sql("SELECT name, language, telegram_user_id FROM tenants WHERE phone = '254746000333'")[0]
    assert tuple(tenant) == ("Baraka", "en", user.chat_id)
    assert user.send("/buy") == "Enter meter number:"
    assert user.send("NOPE") == f"{WARN}Meter NOPE not found.\nEnter meter number:"
    assert user.send("OFF1") == f"{WARN}Meter OFF1 is not in service.\nEnter meter number:"
    assert user.send("a101") == "Enter amount, KES 10-70,000:\nMeter A101 Flat A1"
    assert user.send("abc").startswith(f"{WARN}Whole KES 10-70,000 only.\nEnter amount")
    assert user.send("500.5").startswith(f"{WARN}Whole KES 10-70,000 only.")
    assert user.send("150") == "Confirm payment:\nMeter A101 Flat A1\nAmount KES 150\nPhone 0746000333"
    confirm = user.last
    assert user.send("/cancel") == "Cancelled. Nothing was charged."
    assert user.send("/cancel") == "Nothing to cancel. /start shows the menu."
    assert "reply_markup" not in user.message(confirm["message_id"])  # only the newest message has buttons
    assert user.press_data(confirm["message_id"], data_of(confirm, "Pay now")) == STALE
    assert user.press_data(confirm["message_id"], "1:1' OR 1=1") == STALE

    user.send("/buy")
    assert user.send("X!").startswith(WARN) and user.send("??").startswith(WARN)
    assert user.send("!!") == "Too many wrong entries. Press Menu to start again."
    assert user.press("Menu") == "LipaMeter" and user.buttons() == MENU
    assert user.send("/frobnicate") == "Sorry, I do not know /frobnicate. /help shows what I can do."
    not_text = "Sorry, I can only read text and the buttons. /help shows what I can do."
    assert user.deliver(stack.telegram.sticker(user.chat_id)) == [not_text]
    assert user.deliver(stack.telegram.photo(user.chat_id)) == [not_text]
    assert user.send("9" * 4096) == f"{WARN}Invalid choice.\nLipaMeter"
    assert user.send("/help").startswith("LipaMeter buys electricity for your meter with M-Pesa.")
    assert count(stack, "payments") == 0 and stack.daraja.transactions == []


def test_webhook_refuses_wrong_secret_and_ignores_malformed_updates(stack):
    user = linked(stack)
    url = f"{stack.url}/telegram/webhook"
    update = stack.telegram.say(user.chat_id, "/buy")
    secret = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM["secret"]}
    for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
                    {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM["secret"] + "x"}):
        assert httpx.post(url, json=update, headers=headers).status_code == 403
    assert httpx.get(url).status_code == 405
    sends = user._sent()
    for body in (b"not json", b"[]", b'{"update_id": "x"}', b'{"update_id": 5, "message": {"text": "/buy"}}',
                 b'{"update_id": 6, "edited_message": {"message_id": 1, "date": 0, '
                 b'"chat": {"id": 1, "type": "private"}}}'):
        assert httpx.post(url, content=body, headers=secret).status_code == 200
    assert httpx.post(url, content=b"{" + b" " * 300_000 + b"}", headers=secret).status_code == 413
    time.sleep(0.3)
    assert user._sent() == sends  # nothing was answered, nothing crashed: the bot still talks
    assert user.send("/buy") == "Choose meter:"
    assert count(stack, "payments") == 0


def test_restart_mid_conversation_and_a_double_tap_across_two_replicas(stack):
    user = linked(stack)
    user.press("Buy electricity")
    user.press("A101 Flat A1")
    assert user.send("250").startswith("Confirm payment:")
    stack.restart_app()  # a new process; the conversation lives in the database
    assert user.press("Back") == "Enter amount, KES 10-70,000:\nMeter A101 Flat A1"
    assert user.send("300") == "Confirm payment:\nMeter A101 Flat A1\nAmount KES 300\nPhone 0712345678"
    confirm = user.last

    replica = build_container(stack.settings)
    other = ServerThread(create_app(replica, run_worker=False)).start()  # a second replica
    try:
        user._wait(lambda: replica.telegram_bot.ready, "a replica's start-up")
        taps = [stack.telegram.press(user.chat_id, confirm["message_id"], label="Pay now") for _ in range(2)]
        posts = [(stack.url, taps[0]), (other.url, taps[1])]
        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(lambda p: httpx.post(f"{p[0]}/telegram/webhook", json=p[1], headers={
                "X-Telegram-Bot-Api-Secret-Token": TELEGRAM["secret"]}).status_code, posts))
        assert statuses == [200, 200]
        ids = {tap["callback_query"]["id"] for tap in taps}
        user._wait(lambda: len([a for a in stack.telegram.answers if a["callback_query_id"] in ids]) == 2,
                   "two answers")
        user.wait_for_text("Check your phone for the M-Pesa prompt: KES 300")
    finally:
        other.stop()
    toasts = sorted(a["text"] for a in stack.telegram.answers if a["callback_query_id"] in ids)
    assert toasts == ["", STALE]
    started = [m for m in stack.telegram.bot_messages(user.chat_id) if m["text"].startswith("Check your phone")]
    assert len(started) == 1 and count(stack, "payments") == 1
    payment = stack.sql("SELECT id, amount FROM payments")[0]
    assert payment.amount == 300
    stack.wait_for(payment.id, lambda p: p["status"] == "COMPLETED", timeout=15)
    assert len(stack.daraja.transactions) == 1


def _seed_payments(stack: Stack, n: int) -> None:
    meter = stack.sql("SELECT id FROM meters WHERE number = 'A101'")[0].id
    start = datetime(2026, 11, 1, 9, tzinfo=UTC)
    for i in range(n):
        at = start + timedelta(days=i)
        stack.sql("INSERT INTO payments (id, amount, phone, meter_id, channel, description, status, created_at, "
                  "updated_at) VALUES (:id, :amount, '254712345678', :meter, 'ussd', '', 'completed', :at, :at)",
                  id=str(uuid.uuid4()), amount=100 + i, meter=meter, at=at.replace(tzinfo=None)
                  if stack.database_url.startswith("sqlite") else at)


def test_balance_history_and_language(stack):
    _seed_payments(stack, 6)
    user = linked(stack)
    balance = user.send("/balance")
    assert balance.startswith("Balance\nMeter A101 Flat A1\nKES 100")
    assert user.buttons() == ["Buy electricity", "Alerts", "Back", "Home"]
    # The tenant turns low-balance alerts off for A101 from Telegram (issue 15), then sets their own level.
    assert user.press("Alerts").startswith("Low-balance alerts:\nMeter A101 Flat A1\nOn, below ")
    assert user.buttons() == ["Change level", "Turn off", "Back", "Home"]
    assert user.press("Turn off") == "\u2705 Alerts saved.\nLow-balance alerts:\nMeter A101 Flat A1\nOff"
    assert user.press("Change level").startswith("Alert me when the balance is below (KES, 1-100,000):")
    assert user.send("80").endswith("\nOn, below KES 80")
    row = stack.sql("SELECT enabled, threshold FROM tenant_alerts")[0]
    assert row.enabled in (True, 1) and int(row.threshold) == 80
    history = user.send("/history").splitlines()
    assert history[0] == "Last payments:" and len(history) == 6  # the last five
    assert history[1] == "06/11 KES 105 Paid A101" and history[5] == "02/11 KES 101 Paid A101"
    assert user.press("Home") == "LipaMeter"
    assert user.send("/language") == "Choose language:"
    assert user.buttons() == ["English", "Kiswahili", "Back", "Home"]
    assert user.press("Kiswahili") == "\u2705 Lugha imehifadhiwa.\nLipaMeter"
    assert user.buttons() == ["Nunua umeme", "Angalia salio", "Malipo yangu", "Lugha"]
    assert stack.sql("SELECT language FROM tenants WHERE phone = '254712345678'")[0].language == "sw"
    assert user.send("/help").startswith("LipaMeter hununua umeme")
    assert user.send("/balance").startswith("Salio\nMita A101 Flat A1\n")
    assert user.send("/start").startswith("\u2705 Karibu tena, Wanjiku.\nLipaMeter")


def test_failure_explained_then_blocked_user_gets_the_receipt_by_sms(stack):
    user = linked(stack)
    stack.daraja.script_phone("254712345678", "cancelled")
    user.press("Buy electricity")
    user.press("A101 Flat A1")
    user.press("KES 100")
    assert user.press("Pay now").startswith("Check your phone")
    failed = user.wait_for_text("LipaMeter: your payment of KES 100 for meter A101 did not go through")["text"]
    assert "you cancelled the M-Pesa prompt" in failed and "No money was taken" in failed
    stack.daraja.clear_scripts()

    user.send("/buy")
    user.press("A101 Flat A1")
    user.press("KES 200")
    assert user.press("Pay now").startswith("Check your phone")
    stack.telegram.block(user.chat_id)  # before the receipt: Telegram answers 403, so it goes by SMS
    payment = stack.sql("SELECT id FROM payments WHERE amount = 200")[0].id
    deadline = time.monotonic() + 15
    while not stack.sms.messages("254712345678") and time.monotonic() < deadline:
        time.sleep(0.05)
    sms = stack.sms.messages("254712345678")
    assert len(sms) == 1 and sms[0].message.startswith("LipaMeter: KES 200") and "Meter A101 credited" in sms[0].message
    notes = stack.sql_until("SELECT channel, status, error FROM notifications WHERE payment_id = :p ORDER BY id", 2,
                            p=payment)
    assert [(n.channel, n.status) for n in notes] == [("telegram", "failed"), ("sms", "sent")]
    assert "blocked" in notes[0].error
    assert not any(m["text"].startswith("LipaMeter: KES 200") for m in stack.telegram.bot_messages(user.chat_id))


def test_bot_polling_for_a_laptop(tmp_path, sqlite_template):
    """`lipameter bot --polling`: no webhook, getUpdates instead; the same conversation. (SQLite only.)"""
    shutil.copy(sqlite_template, tmp_path / "polling.db")
    stack = Stack(f"sqlite+aiosqlite:///{tmp_path}/polling.db", telegram=True)
    bot = subprocess.Popen([sys.executable, "-m", "web.cli", "bot", "--polling", "--no-worker"],
                           env=settings_env(stack.settings), cwd=os.path.dirname(os.path.dirname(__file__)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        user = TelegramUser(stack.telegram)
        user._wait(lambda: not stack.telegram.webhook["url"], "deleteWebhook", timeout=20)
        before = user._sent()
        stack.telegram.say(user.chat_id, "/start")  # queued for getUpdates, as Telegram does without a webhook
        user._wait(lambda: user._sent() > before, "a greeting")
        assert user.last["text"].startswith("Karibu! I am LipaMeter.")
        stack.telegram.share_contact(user.chat_id, "254712345678")
        user._wait(lambda: user._sent() >= before + 3, "the menu")
        assert user.last["text"] == "LipaMeter" and user.buttons() == MENU
        bot.send_signal(signal.SIGINT)
        out, err = bot.communicate(timeout=20)
        assert bot.returncode == 0, err
        assert TELEGRAM["token"] not in out + err and "polling" in err
    finally:
        if bot.poll() is None:
            bot.kill()
        stack.stop()


def test_an_update_delivered_twice_runs_once_even_on_another_replica(stack):
    user = linked(stack)
    url = f"{stack.url}/telegram/webhook"
    secret = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM["secret"]}
    buy = stack.telegram.say(user.chat_id, "/buy")
    assert user.deliver(buy) == ["Choose meter:"]
    sends = user._sent()
    # Telegram did not see our 200 and sends the same update again, to another replica.
    replica = build_container(stack.settings)
    other = ServerThread(create_app(replica, run_worker=False)).start()
    try:
        user._wait(lambda: replica.telegram_bot.ready, "a replica's start-up")
        assert httpx.post(f"{other.url}/telegram/webhook", json=buy, headers=secret).status_code == 200
    finally:
        other.stop()
    assert httpx.post(url, json=buy, headers=secret).status_code == 200
    # The chat's next update is answered; the repeats were not (per-chat order: they would have come first).
    assert user.send("/balance") != "Choose meter:"
    assert user._sent() == sends + 1
    assert count(stack, "telegram_updates") == len({d[0] for d in stack.telegram.deliveries if d[1] == 200})


def test_a_backlog_after_downtime_with_lost_answers_is_handled_once_in_order(stack):
    user = linked(stack)
    sends = user._sent()
    stack.telegram.go_offline()
    for text in ("/buy", "a101", "250"):
        stack.telegram.say(user.chat_id, text)
    stack.telegram.lose_answers(2)  # the first two posts reach us, but Telegram sends them again
    assert stack.telegram.come_back() == [200, 200, 200]
    ids = [d[0] for d in stack.telegram.deliveries]
    assert len(ids) == len(set(ids)) + 2  # two updates delivered twice…
    user._wait(lambda: user._sent() >= sends + 3, "three answers")
    texts = [m["text"] for m in stack.telegram.bot_messages(user.chat_id)[sends:]]
    assert texts == ["Choose meter:", "Enter amount, KES 10-70,000:\nMeter A101 Flat A1",
                     "Confirm payment:\nMeter A101 Flat A1\nAmount KES 250\nPhone 0712345678"]  # …answered once
    assert count(stack, "payments") == 0


def test_the_sweep_forgets_old_update_ids(stack):
    linked(stack)
    assert count(stack, "telegram_updates") == 2
    old = datetime.now(UTC) - timedelta(days=3)
    stack.sql("UPDATE telegram_updates SET seen_at = :at", at=old.replace(tzinfo=None)
              if stack.database_url.startswith("sqlite") else old)
    with_container(stack.settings, lambda c: c.worker.sweep())
    assert count(stack, "telegram_updates") == 0
