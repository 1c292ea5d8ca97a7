"""Africa's Talking SMS delivery reports (issue 10): the message id kept per SMS, the report recorded on
its notification, an opted-out receipt resent by Telegram; in core with fakes, then end to end with the
SMS sandbox posting real reports to the app on both database engines."""

from __future__ import annotations

import re
import shutil
import time
from datetime import UTC, datetime

import httpx
import pytest

from core.jobs.kinds import Notify, NotifyEvent
from core.meters.model import Meter
from core.notify.delivery import DeliveryReport, fallback_channel, opted_out, parse_report, record_delivery
from core.notify.service import notify
from core.payments.model import Channel, Payment, PaymentStatus
from core.shared.errors import InvalidInput
from core.tenants.model import Tenant
from tests.admin_helpers import add_user, logged_in
from tests.fakes import AtLikeSms, FakeClock, FakeStore, FakeUnitOfWork
from tests.stack import CALLBACK_TOKEN, Stack
from tests.telegram_helpers import TelegramUser

PHONE = "254712345678"


class FakeTelegram:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    async def send(self, chat_id: int, text: str, *, buy_button: bool = False) -> int:
        self.sent.append((chat_id, text))
        return 1


def _store(chat_id: int | None = 4242) -> FakeStore:
    store, now = FakeStore(), datetime(2026, 11, 27, 9, tzinfo=UTC)
    store.meters["m"] = Meter(id="m", number="A101", name="Flat A1", device_id="d")
    store.tenants["t"] = Tenant(id="t", phone=PHONE, telegram_user_id=chat_id, telegram_chat_id=chat_id)
    store.payments["p"] = Payment(id="p", amount=100, phone=PHONE, meter_id="m", channel=Channel.API,
                                  created_at=now, updated_at=now, status=PaymentStatus.FAILED, result_code="1032",
                                  tenant_id="t")
    return store


def report(status: str = "Success", reason: str = "", message_id: str = "ATXid_1") -> DeliveryReport:
    return DeliveryReport(message_id, status, "+" + PHONE, "63902", reason)


async def _receipt_by_sms(store: FakeStore) -> None:
    # A payment started from the API is told by SMS even when the tenant has a Telegram chat.
    assert await notify(Notify(NotifyEvent.PAYMENT_FAILED, payment_id="p"), uow=FakeUnitOfWork(store),
                        sms=AtLikeSms(), clock=FakeClock(), telegram=FakeTelegram()) == "sent"


async def test_notify_keeps_the_sms_message_id():
    store = _store()
    await _receipt_by_sms(store)
    assert [(n["channel"], n["provider_id"]) for n in store.notifications] == [("sms", "ATXid_1")]


@pytest.mark.parametrize("reason, out", [("UserInBlackList", True), ("UserInBlacklist", True),
                                         ("DoNotDisturb", True), ("DND rejection", True),
                                         ("DeliveryFailure", False), ("AbsentSubscriber", False), ("", False)])
def test_opted_out_reasons(reason, out):
    assert opted_out(reason) is out


def test_fallback_decision():
    linked, plain = Tenant(id="t", phone=PHONE, telegram_chat_id=7), Tenant(id="u", phone=PHONE)
    blacklisted = report("Rejected", "UserInBlackList")
    assert fallback_channel(blacklisted, linked, whatsapp_open=True) == "telegram"
    assert fallback_channel(blacklisted, plain, whatsapp_open=True) == "whatsapp"
    assert fallback_channel(blacklisted, plain, whatsapp_open=False) is None
    assert fallback_channel(blacklisted, None, whatsapp_open=True) is None
    assert fallback_channel(report("Failed", "AbsentSubscriber"), linked, whatsapp_open=True) is None
    assert fallback_channel(report("Success"), linked, whatsapp_open=True) is None


def test_parse_report_checks_id_and_status():
    parsed = parse_report({"id": "ATXid_9", "status": "Rejected", "phoneNumber": "+254712345678",
                           "networkCode": "63902", "failureReason": "UserInBlackList", "retryCount": "0"})
    assert parsed == DeliveryReport("ATXid_9", "Rejected", "+254712345678", "63902", "UserInBlackList")
    assert parse_report({"id": "x", "status": "Success", "failureReason": "junk"}).failure_reason == ""
    for form in ({"status": "Success"}, {"id": "x"}, {"id": "x", "status": "Delivered"}, {"id": "a b", "status": "Sent"}):
        with pytest.raises(InvalidInput):
            parse_report(form)


async def test_reports_recorded_final_kept_and_opted_out_resent_once_by_telegram():
    store, clock = _store(), FakeClock()
    await _receipt_by_sms(store)
    assert await record_delivery(report("Buffered"), uow=FakeUnitOfWork(store), clock=clock) == "recorded"
    assert await record_delivery(report(message_id="ATXid_404"), uow=FakeUnitOfWork(store), clock=clock) == "unknown"
    rejected = report("Rejected", "UserInBlackList")
    assert await record_delivery(rejected, uow=FakeUnitOfWork(store), clock=clock) == "fallback_telegram"
    assert await record_delivery(rejected, uow=FakeUnitOfWork(store), clock=clock) == "stale"  # AT repeating itself
    assert await record_delivery(report("Sent"), uow=FakeUnitOfWork(store), clock=clock) == "stale"  # late interim
    row = store.notifications[0]
    assert (row["delivery_status"], row["delivery_error"]) == ("Rejected", "UserInBlackList")
    assert [job.payload for job in store.jobs] == [
        {"event": "payment_failed", "payment_id": "p", "resend_of": 1, "via": "telegram", "tenant_id": "t"}]
    # The worker runs that job: the same text, in the tenant's chat, recorded; no SMS again.
    telegram, sms = FakeTelegram(), AtLikeSms()
    job = Notify.from_dict(store.jobs[0].payload)
    assert await notify(job, uow=FakeUnitOfWork(store), sms=sms, clock=clock, telegram=telegram) == "sent"
    assert telegram.sent == [(4242, row["message"])] and sms.sent == []
    assert [(n["channel"], n["status"]) for n in store.notifications] == [("sms", "sent"), ("telegram", "sent")]


async def test_no_other_channel_no_job():
    store = _store(chat_id=None)
    await _receipt_by_sms(store)
    outcome = await record_delivery(report("Rejected", "UserInBlackList"), uow=FakeUnitOfWork(store), clock=FakeClock())
    assert outcome == "recorded" and store.jobs == []


# --- end to end: the SMS sandbox posts AT's reports to the app ---------------------------------------


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url, telegram=True, secret_key="test-secret-key-0123456789abcdef")
    stack.sms.report_to(f"{stack.url}/sms/delivery/{CALLBACK_TOKEN}", delay_s=0.2)
    yield stack
    stack.stop()


def _until(check, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def _sms_rows(stack: Stack) -> list:
    return stack.sql("SELECT id, provider_id, delivery_status, delivery_error, delivered_at FROM notifications "
                     "WHERE channel = 'sms' ORDER BY id")


def _paid(stack: Stack) -> str:
    answer = stack.pay(amount=100)
    assert answer.status_code == 200, answer.text
    payment_id = answer.json()["paymentId"]
    stack.wait_for(payment_id, lambda p: p["topUpStatus"] == "APPLIED")
    return payment_id


def test_success_report_recorded_and_shown_on_the_payment_page(stack):
    payment_id = _paid(stack)
    row = _until(lambda: [r for r in _sms_rows(stack) if r.delivery_status == "Success"])[0]
    sent = stack.sms.messages(PHONE)[-1]
    assert row.provider_id == sent.messageId and row.delivered_at is not None
    assert [r.answer for r in stack.sms.reports(PHONE)] == [200]
    add_user(stack.database_url, "watcher", "viewer")
    admin = logged_in(stack, "watcher")
    page = admin.page(f"/admin/payments/{payment_id}")
    admin.close()
    assert page.status_code == 200 and re.search(r"<td>Delivered \d\d:\d\d:\d\d</td>", page.text), page.text


def test_blacklisted_receipt_goes_to_telegram(stack):
    user = TelegramUser(stack.telegram)
    user.send("/start")
    user.share_contact()
    stack.sms.report_as(PHONE, "Rejected", "UserInBlackList")
    before = len(stack.telegram.bot_messages(user.chat_id))
    _paid(stack)  # started from the API, so the receipt goes by SMS first
    row = _until(lambda: [r for r in _sms_rows(stack) if r.delivery_status == "Rejected"])[0]
    assert row.delivery_error == "UserInBlackList"
    receipt = _until(lambda: [m for m in stack.telegram.bot_messages(user.chat_id)[before:] if "A101" in m["text"]])
    assert "KES 100" in receipt[0]["text"]
    rows = stack.sql_until("SELECT channel, status FROM notifications WHERE channel = 'telegram'", 1)
    assert [(r.channel, r.status) for r in rows] == [("telegram", "sent")]


def test_failed_report_is_recorded_without_fallback(stack):
    script = f"{stack._sms_server.url}/sandbox/sms/script"  # the demo's way to script it
    assert httpx.post(script, json={"phone": PHONE, "status": "Delivered"}).status_code == 400
    assert httpx.post(script, json={"phone": PHONE, "status": "Failed", "reason": "AbsentSubscriber"}).status_code == 200
    _paid(stack)
    row = _until(lambda: [r for r in _sms_rows(stack) if r.delivery_status == "Failed"])[0]
    assert row.delivery_error == "AbsentSubscriber" and row.delivered_at is None
    assert stack.sql("SELECT count(*) n FROM jobs WHERE CAST(payload AS TEXT) LIKE '%resend_of%'")[0].n == 0


def test_bad_reports(stack):
    url = f"{stack.url}/sms/delivery/{CALLBACK_TOKEN}"
    form = {"id": "ATXid_nobody", "status": "Success", "phoneNumber": "+254700000000", "networkCode": "63902"}
    assert httpx.post(f"{stack.url}/sms/delivery/wrong-token-0123456789", data=form).status_code == 404
    unknown = httpx.post(url, data=form)
    assert unknown.status_code == 200 and unknown.json()["outcome"] == "unknown"
    assert httpx.post(url, data={"id": "ATXid_1", "status": "Delivered"}).status_code == 400
    assert httpx.post(url, data={"status": "Success"}).status_code == 400
    assert httpx.post(url, content=b"id=\xff\xfe&status=Success",
                      headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 400
    assert httpx.post(url, data={"id": "x" * 9000, "status": "Success"}).status_code == 413
    assert stack.sql("SELECT count(*) n FROM notifications WHERE delivery_status IS NOT NULL")[0].n == 0


def test_reports_from_outside_the_allowlist_are_refused(sqlite_template, tmp_path):
    shutil.copy(sqlite_template, tmp_path / "db.db")
    stack = Stack(f"sqlite+aiosqlite:///{tmp_path}/db.db", seed=False, sms_report_allowed_ips="10.9.9.0/24")
    try:
        answer = httpx.post(f"{stack.url}/sms/delivery/{CALLBACK_TOKEN}", data={"id": "ATXid_1", "status": "Success"})
        assert answer.status_code == 403
    finally:
        stack.stop()
