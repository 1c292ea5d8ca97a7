"""Issue 11 §1: the worker's periodic audit tells the landlord about a violation or a new review item,
at most once an hour, with a summary (counts, the first few subjects, no phone numbers)."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import httpx

from core.audit.alerts import ALERT_EVENT, compose_alert, tell_landlord
from core.audit.checks import audit
from core.audit.facts import Facts, MeterMoney, ReviewItem
from core.shared.errors import UpstreamError
from core.tenants.model import Tenant
from tests.fakes import FakeClock, FakeUnitOfWork
from tests.stack import Stack

ADMIN = "254722000111"
CLEAN = audit(Facts())
BROKEN = audit(Facts(money=[MeterMoney("A101", paid=Decimal(100), credited=Decimal(200))]))


class Outbox:
    """A sender that records what it was given (SMS or Telegram), or fails as told."""

    def __init__(self) -> None:
        self.sent: list[tuple[object, str]] = []
        self.failing: UpstreamError | None = None

    async def send(self, to, text):
        if self.failing:
            raise self.failing
        self.sent.append((to, text))


def world():
    return FakeUnitOfWork(), FakeClock(), Outbox()


async def tell(uow, clock, sms, report, reviews, telegram=None):
    return await tell_landlord(report, reviews, phone=ADMIN, uow=FakeUnitOfWork(uow.store), sms=sms,
                               telegram=telegram, clock=clock)


def review(clock, subject):
    return ReviewItem(subject, clock.now())


async def test_a_new_review_is_told_once_then_the_hour_is_quiet_then_only_new_ones_are_told():
    uow, clock, sms = world()
    first = review(clock, "payment KES 500 for meter A101")
    assert await tell(uow, clock, sms, CLEAN, [first]) == "sent"
    assert sms.sent == [(ADMIN, sms.sent[0][1])] and "1 new review(s): payment KES 500 for meter A101" in sms.sent[0][1]
    clock.advance(600)
    second = review(clock, "top-up KES 200 on meter B201")
    assert await tell(uow, clock, sms, CLEAN, [first, second]) == "quiet"  # within the hour
    clock.advance(2999)
    assert await tell(uow, clock, sms, CLEAN, [first, second]) == "quiet"  # 59 min 59 s... still within
    clock.advance(1)
    assert await tell(uow, clock, sms, CLEAN, [first, second]) == "sent"
    latest = sms.sent[-1][1]
    assert "1 new review(s): top-up KES 200 on meter B201" in latest and "2 review(s) open" in latest
    assert "A101" not in latest  # already told
    clock.advance(7200)
    assert await tell(uow, clock, sms, CLEAN, [first, second]) == "nothing"  # nothing new, nothing wrong
    assert len(sms.sent) == 2
    assert [n["status"] for n in uow.store.notifications if n["event"] == ALERT_EVENT] == ["sent", "sent"]


async def test_a_violation_is_repeated_hourly_while_it_lasts():
    uow, clock, sms = world()
    assert await tell(uow, clock, sms, BROKEN, []) == "sent"
    assert "2 violation(s): credited_le_paid total; credited_le_paid meter A101" in sms.sent[0][1]
    clock.advance(1800)
    assert await tell(uow, clock, sms, BROKEN, []) == "quiet"
    clock.advance(1800)
    assert await tell(uow, clock, sms, BROKEN, []) == "sent" and len(sms.sent) == 2


async def test_a_failed_message_does_not_use_up_the_hour():
    uow, clock, sms = world()
    sms.failing = UpstreamError("Africa's Talking is down", code="sms_unavailable", transient=True)
    assert await tell(uow, clock, sms, BROKEN, []) == "failed"
    sms.failing = None
    clock.advance(300)
    assert await tell(uow, clock, sms, BROKEN, []) == "sent" and len(sms.sent) == 1


async def test_a_landlord_linked_in_telegram_is_told_there():
    uow, clock, sms = world()
    telegram = Outbox()
    uow.store.tenants["t1"] = Tenant(id="t1", phone=ADMIN, telegram_user_id=5, telegram_chat_id=77)
    assert await tell(uow, clock, sms, BROKEN, [], telegram=telegram) == "sent"
    assert telegram.sent[0][0] == 77 and sms.sent == []
    assert uow.store.notifications[-1]["channel"] == "telegram"
    assert uow.store.notifications[-1]["recipient"] != ADMIN  # masked


def test_the_summary_shows_counts_and_the_first_few_subjects_only():
    clock = FakeClock()
    reviews = [review(clock, f"top-up KES {n} on meter A10{n}") for n in range(1, 6)]
    text = compose_alert(CLEAN, reviews, last_told=None)
    assert "5 new review(s)" in text and "A103" in text and "A104" not in text and "+2 more" in text
    assert compose_alert(CLEAN, reviews, last_told=clock.now() + timedelta(seconds=1)) is None


def test_end_to_end_a_review_item_reaches_the_landlord_by_one_sms(database_url):
    stack = Stack(database_url, admin_phone="0722 000 111", audit_every_s=0.3)
    try:
        stack.daraja.script_phone("254712345678", "success", paid_amount=1)  # paid less than asked: a review
        first = stack.pay(amount=500).json()
        stack.wait_for(first["paymentId"], lambda p: p["status"] == "NEEDS_REVIEW")
        deadline = time.monotonic() + 30
        while not stack.sms.messages(to=ADMIN):
            assert time.monotonic() < deadline, "the landlord was never told"
            time.sleep(0.1)
        # A second review within the hour: audited, exported, but no second message.
        stack.daraja.script_phone("254712345678", "success", paid_amount=2)
        second = stack.pay(amount=600).json()
        stack.wait_for(second["paymentId"], lambda p: p["status"] == "NEEDS_REVIEW")
        told = stack.sql_until("SELECT at FROM notifications WHERE event = 'landlord_alert'", 1)
        assert len(told) == 1
        runs_before = stack.container.audit_watch._last_alerting_run
        deadline = time.monotonic() + 30
        while stack.container.audit_watch._last_alerting_run <= runs_before:
            assert time.monotonic() < deadline, "the audit stopped running"
            time.sleep(0.1)
        messages = stack.sms.messages(to=ADMIN)
        assert len(messages) == 1
        text = messages[0].message
        assert "1 new review(s): payment KES 500 for meter A101" in text
        assert "712345678" not in text  # the payer's number is never in the summary
        assert len(stack.sql("SELECT at FROM notifications WHERE event = 'landlord_alert'")) == 1
        metrics = httpx.get(f"{stack.url}/metrics").text
        assert 'lipameter_reviews_open{kind="payment"} 2.0' in metrics
        assert 'lipameter_audit_violations{check="credited_le_paid"} 0.0' in metrics
        assert "lipameter_jobs_queue_depth" in metrics and "lipameter_topup_oldest_waiting_seconds" in metrics
        assert "lipameter_callbacks_waiting 0.0" in metrics  # every callback applied
    finally:
        stack.stop()
