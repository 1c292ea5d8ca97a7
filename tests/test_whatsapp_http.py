"""WhatsApp through the real app: uvicorn, the in-process worker, deliveries built by the Cloud API
sandbox as Meta builds them, signed with the app secret and posted to /whatsapp/webhook, the app's
replies read back from the sandbox (which checks their payload shapes), Daraja, Tuya and SMS sandboxes
over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.stack import WHATSAPP, Stack
from tests.whatsapp_helpers import WhatsAppUser

WARN = "\u26a0\ufe0f "
STALE = "That button is from an earlier message. Please use the latest one."
MENU = ["Buy electricity", "Check balance", "My payments", "Language"]
MENU_SW = ["Nunua umeme", "Angalia salio", "Malipo yangu", "Lugha"]
NOT_TEXT = "Sorry, I can only read text and the buttons. Type help to see what I can do."


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url, whatsapp=True)
    yield stack
    stack.stop()


def count(stack: Stack, table: str, where: str = "1=1", **params) -> int:
    return stack.sql(f"SELECT count(*) AS n FROM {table} WHERE {where}", **params)[0].n


def reply_id(message: dict, title: str) -> str:
    buttons = message["payload"]["interactive"]["action"]["buttons"]
    return next(b["reply"]["id"] for b in buttons if b["reply"]["title"] == title)


def wait_for_notes(stack: Stack, payment_id: str, n: int) -> list[tuple[str, str]]:
    rows = stack.sql_until("SELECT channel, status FROM notifications WHERE payment_id = :p ORDER BY id", n,
                           timeout=15, p=payment_id)
    return [(row.channel, row.status) for row in rows]


def test_known_tenant_buys_by_buttons_double_tap_pays_once_receipt_in_the_window(stack):
    user = WhatsAppUser(stack.whatsapp)
    greeting, menu = user.deliver(stack.whatsapp.say(user.wa_id, "Hi"), sends=2)
    assert greeting.startswith("Karibu! I am LipaMeter.") and "0712345678" in greeting  # recognised at once
    assert menu == "LipaMeter" and user.kind() == "list" and user.choices() == MENU

    assert user.tap("Buy electricity") == "Choose meter:"
    assert user.kind() == "list" and user.choices() == ["A101 Flat A1", "Other meter", "Back", "Home"]
    assert user.say("b201").startswith("Enter amount, KES 10-70,000:\nMeter B201 Shop 1")  # typed under the list
    assert user.say("0") == "Enter meter number:"
    assert user.say("0") == "Choose meter:"
    assert user.tap("A101 Flat A1").startswith("Enter amount, KES 10-70,000:\nMeter A101 Flat A1")
    assert user.kind() == "button" and user.choices() == ["KES 100", "KES 200", "KES 500"]
    assert user.tap("KES 500") == "Confirm payment:\nMeter A101 Flat A1\nAmount KES 500\nPhone 0712345678"
    assert user.kind() == "button" and user.choices() == ["Pay now", "Cancel", "Pay from other phone"]  # Back: type 0
    confirm = user.last
    started = user.tap("Pay now")
    assert started.startswith("Check your phone for the M-Pesa prompt: KES 500 for meter A101, from 0712345678.")
    # The same button tapped again (a double tap, a second phone): answered, never paid twice.
    assert user.tap_id(confirm["id"], reply_id(confirm, "Pay now")) == STALE
    payments = stack.sql("SELECT id, channel, idempotency_key, amount FROM payments")
    assert len(payments) == 1 and payments[0].channel == "whatsapp" and payments[0].amount == 500
    assert payments[0].idempotency_key == f"wa:{confirm['id']}"

    paid = stack.wait_for(payments[0].id, lambda p: p["topUpStatus"] == "APPLIED", timeout=15)
    receipt = user.wait_for_text("LipaMeter: KES 500")
    assert receipt["payload"]["type"] == "text"  # inside the 24-hour window: a normal message
    assert f"(M-Pesa {paid['mpesaReceiptNumber']})" in receipt["text"] and "Meter A101 credited" in receipt["text"]
    assert wait_for_notes(stack, payments[0].id, 1) == [("whatsapp", "sent")]
    assert stack.sms.messages("254712345678") == []
    assert len(stack.daraja.transactions) == 1
    assert stack.whatsapp.refused == []  # every message the app sent had a shape Meta accepts
    assert 'lipameter_payments_started_total{channel="whatsapp"} 1.0' in httpx.get(f"{stack.url}/metrics").text


def test_new_tenant_buys_by_typing_in_kiswahili(stack):
    user = WhatsAppUser(stack.whatsapp, wa_id="254746000334", name="Baraka")
    greeting, menu = user.deliver(stack.whatsapp.say(user.wa_id, "habari"), sends=2)
    assert greeting.startswith("Karibu! I am LipaMeter.") and menu == "LipaMeter"
    assert user.say("lugha") == "Choose language:"
    assert user.choices() == ["English", "Kiswahili", "Back"]
    assert user.tap("Kiswahili") == "\u2705 Lugha imehifadhiwa.\nLipaMeter"
    assert user.choices() == MENU_SW
    assert stack.sql("SELECT language FROM tenants WHERE phone = '254746000334'")[0].language == "sw"

    assert user.say("nunua") == "Weka nambari ya mita:"
    assert user.say("NOPE").startswith(WARN)
    amount = user.say("a101")
    assert amount.startswith("Weka kiasi, KES 10-70,000:\nMita A101 Flat A1")
    assert user.say("abc").startswith(WARN)
    assert user.say("150") == "Thibitisha malipo:\nMita A101 Flat A1\nKiasi KES 150\nSimu 0746000334"
    state_version = stack.sql("SELECT version FROM whatsapp_chats WHERE wa_id = '254746000334'")[0].version
    started = user.say("1")
    assert started.startswith("Angalia simu yako kwa ombi la M-Pesa: KES 150 kwa mita A101, kutoka 0746000334.")
    payment = stack.sql("SELECT id, channel, idempotency_key FROM payments")
    assert len(payment) == 1 and payment[0].channel == "whatsapp"
    assert payment[0].idempotency_key == f"wa:254746000334:v{state_version}"
    assert user.say("1") == "LipaMeter" and user.choices() == MENU_SW  # over: a fresh menu, no second payment
    receipt = user.wait_for_text("LipaMeter: KES 150")
    assert "imepokelewa" in receipt["text"]
    assert count(stack, "payments") == 1 and stack.whatsapp.refused == []


def test_known_tenant_in_kiswahili_by_buttons_and_english_by_typing(stack):
    stack.sql("UPDATE tenants SET language = 'sw' WHERE phone = '254712345678'")
    user = WhatsAppUser(stack.whatsapp)
    user.deliver(stack.whatsapp.say(user.wa_id, "menyu"), sends=2)
    assert user.choices() == MENU_SW
    user.tap("Nunua umeme")
    user.tap("A101 Flat A1")
    user.tap("KES 200")
    assert user.tap("Lipa sasa").startswith("Angalia simu yako kwa ombi la M-Pesa: KES 200")
    user.wait_for_text("LipaMeter: KES 200")

    stack.sql("UPDATE tenants SET language = 'en' WHERE phone = '254712345678'")
    assert user.say("buy") == "Choose meter:"
    assert user.say("1").startswith("Enter amount")
    assert user.say("300").startswith("Confirm payment:")
    assert user.say("1").startswith("Check your phone for the M-Pesa prompt: KES 300")
    user.wait_for_text("LipaMeter: KES 300")
    assert sorted(p.amount for p in stack.sql("SELECT amount FROM payments")) == [200, 300]


def buy(user: WhatsAppUser, amount: str) -> None:
    user.say("buy")
    user.tap("A101 Flat A1")
    user.say(amount)
    assert user.tap("Pay now").startswith("Check your phone")


def test_receipts_outside_the_window_by_template_and_by_sms_when_neither_goes(database_url):
    stack = Stack(database_url, whatsapp=True, callback_delay_s=1.0)
    try:
        user = WhatsAppUser(stack.whatsapp)
        user.deliver(stack.whatsapp.say(user.wa_id, "hi"), sends=2)

        # A day of silence (our clock and Meta's): the receipt goes as the approved template.
        buy(user, "120")
        stack.whatsapp.expire_window(user.wa_id)
        old = datetime.now(UTC) - timedelta(hours=25)
        stack.sql("UPDATE whatsapp_chats SET last_inbound_at = :at",
                  at=old.replace(tzinfo=None) if stack.database_url.startswith("sqlite") else old)
        first = stack.sql("SELECT id FROM payments WHERE amount = 120")[0].id
        assert wait_for_notes(stack, first, 1) == [("whatsapp_tmpl", "sent")]
        template = user.wait_for_text("LipaMeter receipt: LipaMeter: KES 120")
        assert template["payload"]["template"]["name"] == "lipameter_receipt"

        # Our clock says open, Meta's says closed (131047): the template still goes.
        buy(user, "130")
        stack.whatsapp.expire_window(user.wa_id)
        second = stack.sql("SELECT id FROM payments WHERE amount = 130")[0].id
        assert wait_for_notes(stack, second, 1) == [("whatsapp_tmpl", "sent")]
        assert [r["code"] for r in stack.whatsapp.refused] == [131047]

        # The template is withdrawn: WhatsApp cannot take the receipt, SMS does.
        buy(user, "140")
        stack.whatsapp.expire_window(user.wa_id)
        stack.whatsapp.templates.clear()
        third = stack.sql("SELECT id FROM payments WHERE amount = 140")[0].id
        assert wait_for_notes(stack, third, 2) == [("whatsapp", "failed"), ("sms", "sent")]
        sms = stack.sms.messages("254712345678")
        assert len(sms) == 1 and sms[0].message.startswith("LipaMeter: KES 140")
    finally:
        stack.stop()


def test_a_failed_payment_is_explained(stack):
    stack.daraja.script_phone("254712345678", "cancelled")
    user = WhatsAppUser(stack.whatsapp)
    user.deliver(stack.whatsapp.say(user.wa_id, "hi"), sends=2)
    buy(user, "100")
    failed = user.wait_for_text("LipaMeter: your payment of KES 100 for meter A101 did not go through")["text"]
    assert "you cancelled the M-Pesa prompt" in failed and "No money was taken" in failed
    payment = stack.sql("SELECT id, status FROM payments")[0]
    assert payment.status == "cancelled" and wait_for_notes(stack, payment.id, 1) == [("whatsapp", "sent")]


def test_signature_verification_and_bad_input_never_5xx_never_pay(stack):
    url = f"{stack.url}/whatsapp/webhook"
    challenge = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": WHATSAPP["verify_token"]}
    answer = httpx.get(url, params=challenge)
    assert answer.status_code == 200 and answer.text == "1158201444"
    assert httpx.get(url, params=challenge | {"hub.verify_token": "wrong"}).status_code == 403
    assert httpx.get(url, params=challenge | {"hub.mode": "unsubscribe"}).status_code == 403

    user = WhatsAppUser(stack.whatsapp)
    body = json.dumps(stack.whatsapp.say(user.wa_id, "buy")).encode()
    good = stack.whatsapp.sign(body)
    # The last hex digit changed (not set to "0": one signature in 16 already ends with it, and was accepted).
    altered = good[:-1] + ("1" if good[-1] == "0" else "0")
    for headers in ({}, {"X-Hub-Signature-256": "sha256=" + "0" * 64}, {"X-Hub-Signature-256": altered},
                    {"X-Hub-Signature-256": good.replace("sha256=", "")}):
        assert httpx.post(url, content=body, headers=headers).status_code == 403
    assert httpx.post(url, content=body + b" ", headers={"X-Hub-Signature-256": good}).status_code == 403
    assert count(stack, "whatsapp_inbound") == 0 and count(stack, "whatsapp_chats") == 0
    assert stack.whatsapp.business_messages(user.wa_id) == []

    for junk in (b"not json", b"[]", b'{"object": "whatsapp_business_account", "entry": [{"changes": 5}]}'):
        assert httpx.post(url, content=junk, headers={"X-Hub-Signature-256": stack.whatsapp.sign(junk)}).status_code == 200

    # The signed delivery, then Meta's retry of it: answered once.
    first = json.loads(body)
    assert user.deliver(first, sends=2)[-1] == "Choose meter:"
    assert user.deliver(first, sends=0) == []
    assert count(stack, "whatsapp_inbound") == 1

    sandbox = stack.whatsapp
    assert user.deliver(sandbox.sticker(user.wa_id)) == [NOT_TEXT]
    assert user.deliver(sandbox.image(user.wa_id)) == [NOT_TEXT]
    assert user.deliver(sandbox.location(user.wa_id)) == [NOT_TEXT]
    assert user.deliver(sandbox.reaction(user.wa_id, user.last["id"])) == [NOT_TEXT]
    assert user.say("9" * 4096).startswith(f"{WARN}Invalid choice.")
    assert user.tap_id(user.interactive()["id"], "1:1' OR 1=1") == STALE
    assert user.say("help").startswith("LipaMeter buys electricity")

    # A status report is recorded, not answered.
    ours = user.last["id"]
    replies = len(sandbox.business_messages(user.wa_id))
    assert sandbox.deliver(sandbox.report(user.wa_id, ours, "read"), retries=False) == 200
    failed = sandbox.report(user.wa_id, ours, "failed", error={"code": 131026, "title": "Message undeliverable"})
    assert sandbox.deliver(failed, retries=False) == 200
    statuses = stack.sql("SELECT status, error FROM whatsapp_statuses WHERE message_id = :m ORDER BY id", m=ours)
    assert [(s.status, s.error) for s in statuses] == [("read", None), ("failed", "131026 Message undeliverable")]
    assert len(sandbox.business_messages(user.wa_id)) == replies

    # A number outside Kenya: told politely, nothing started.
    foreign = WhatsAppUser(sandbox, wa_id="15551234567", name="Visitor")
    assert foreign.say("hi").startswith("Sorry, LipaMeter works with Kenyan M-Pesa numbers only.")
    assert count(stack, "tenants", "phone LIKE '1555%'") == 0

    # A flood from one number: answered up to the limit, then silence (counted in the database).
    flooder = WhatsAppUser(sandbox, wa_id="254733999888", name="Flood")
    for i in range(24):
        assert sandbox.deliver(sandbox.say(flooder.wa_id, f"x{i}"), retries=False) == 200
    assert 15 <= len(sandbox.business_messages(flooder.wa_id)) <= 21
    assert count(stack, "payments") == 0 and stack.daraja.transactions == []
    assert sandbox.refused == []


def test_sandbox_retries_a_delivery_the_app_did_not_take(stack):
    """Meta retries a non-2xx answer: the sandbox does too, and the app answers the message once."""
    user = WhatsAppUser(stack.whatsapp)
    delivery = stack.whatsapp.say(user.wa_id, "hi")
    stack.whatsapp.webhook_url = f"{stack.url}/whatsapp/webhook-moved"  # 404 for a while
    assert stack.whatsapp.deliver(delivery) == 404
    assert [d["status"] for d in stack.whatsapp.deliveries] == [404, 404, 404, 404]
    stack.whatsapp.webhook_url = f"{stack.url}/whatsapp/webhook"
    assert user.deliver(delivery, sends=2)[-1] == "LipaMeter"
