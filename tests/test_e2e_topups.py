"""The top-up fault matrix, end to end: the app under uvicorn, the real tuya-connector-python client
signing requests to the Tuya cloud sandbox, Daraja and SMS sandboxes, on SQLite and PostgreSQL.

After every scenario the invariant holds: what the sandbox meter was credited equals the sum of
applied top-ups, and never more than the money paid."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tests.stack import Stack

FAST = dict(topup_backoff_s="0.3,0.3,0.5", topup_max_attempts=6, tuya_timeout_s=1.0)


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url, **FAST)
    yield stack
    stack.stop()


def paid_and_applied(stack: Stack, device: str = "dev-a101") -> tuple[Decimal, Decimal, Decimal]:
    paid = stack.sql("SELECT coalesce(sum(amount), 0) s FROM payments WHERE status = 'completed'")[0].s
    applied = stack.sql("SELECT coalesce(sum(amount), 0) s FROM topups WHERE status = 'applied'")[0].s
    return Decimal(paid), Decimal(applied), stack.tuya.total_credits(device)


def assert_invariant(stack: Stack, device: str = "dev-a101") -> None:
    paid, applied, credited = paid_and_applied(stack, device)
    assert credited == applied <= paid, (credited, applied, paid)


def pay_and_wait(stack: Stack, amount: int = 200, until=lambda p: p["topUpStatus"] in ("APPLIED", "FAILED", "NEEDS_REVIEW"),
                 timeout: float = 20) -> dict:
    answer = stack.pay(amount=amount)
    assert answer.status_code == 200, answer.text
    return stack.wait_for(answer.json()["paymentId"], until, timeout=timeout)


def test_answer_lost_after_apply_is_verified_not_resent(stack):
    stack.tuya.set_fault("dev-a101", "apply_lose_answer", n=1, seconds=3)
    done = pay_and_wait(stack)
    assert done["topUpStatus"] == "APPLIED" and done["unitsAdded"] == 200
    assert stack.tuya.total_credits("dev-a101") == 200  # once, not twice
    assert_invariant(stack)


def test_accepted_but_never_applied_is_sent_again_once(stack):
    stack.tuya.set_fault("dev-a101", "accept_not_apply", n=1)
    done = pay_and_wait(stack)
    assert done["topUpStatus"] == "APPLIED"
    topup = stack.sql("SELECT attempts FROM topups")[0]
    assert topup.attempts >= 2 and stack.tuya.total_credits("dev-a101") == 200
    assert_invariant(stack)


def test_slow_meter_reporting_its_counter_late_is_charged_once(stack):
    # The cloud's status is a cache: the meter reports its purchase counter every 6 s, after the
    # confirm deadline (3 s). The stale "unchanged" counter must not lead to a second charge.
    stack.tuya.set_fault("dev-a101", "late_report", seconds=6, codes=["electric_total"])
    done = pay_and_wait(stack, timeout=30)
    assert done["topUpStatus"] == "APPLIED" and done["unitsAdded"] == 200
    assert stack.tuya.total_credits("dev-a101") == 200  # once, not twice
    assert_invariant(stack)


def test_offline_spell_then_applied_once_with_delay_sms(stack):
    stack.tuya.set_fault("dev-a101", "offline")
    answer = stack.pay(amount=300)
    ref = answer.json()["paymentId"]
    deadline = time.monotonic() + 15
    while not stack.sms.messages(to="+254712345678"):
        assert time.monotonic() < deadline, "no delay SMS"
        time.sleep(0.1)
    assert "delayed" in stack.sms.messages(to="+254712345678")[0].message
    assert stack.payment(ref)["topUpStatus"] in ("QUEUED", "SENDING")
    stack.tuya.set_fault("dev-a101", "online")
    done = stack.wait_for(ref, lambda p: p["topUpStatus"] == "APPLIED", timeout=20)
    assert done["status"] == "COMPLETED" and stack.tuya.total_credits("dev-a101") == 300
    assert_invariant(stack)


def test_throttling_and_server_errors_are_retried(stack):
    stack.tuya.set_fault("dev-a101", "throttle", n=2, code=1110)
    done = pay_and_wait(stack)
    assert done["topUpStatus"] == "APPLIED"
    stack.tuya.set_fault("dev-a101", "server_error", n=2)
    done = pay_and_wait(stack, amount=150)
    assert done["topUpStatus"] == "APPLIED"
    assert stack.tuya.total_credits("dev-a101") == 350
    assert_invariant(stack)


def test_permanent_refusal_fails_at_once_and_payer_is_told(stack):
    # The Tuya project lost its permission on the device (1106): retrying cannot help.
    stack.tuya.set_fault("dev-a101", "throttle", n=1, code=1106)
    done = pay_and_wait(stack, amount=600)
    assert done["status"] == "COMPLETED" and done["topUpStatus"] == "FAILED"
    topup = stack.sql("SELECT attempts, last_error FROM topups")[0]
    assert topup.attempts == 1 and "Tuya error" in topup.last_error
    assert stack.tuya.total_credits("dev-a101") == 0
    _wait(lambda: any("could not credit" in m.message for m in stack.sms.messages(to="+254712345678")))
    assert_invariant(stack)


def test_energy_meter_gets_kwh_and_remainder_recorded(stack):
    answer = stack.pay(amount=260, meter="B201")
    done = stack.wait_for(answer.json()["paymentId"], lambda p: p["topUpStatus"] == "APPLIED", timeout=20)
    assert done["unitsAdded"] == 10  # 260 / 25 = 10.4 kWh, the DP takes whole kWh
    remainder = stack.sql("SELECT remainder FROM topups")[0].remainder
    assert Decimal(remainder) == Decimal("10.00")
    assert stack.tuya.total_credits("dev-b201") == 10


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
