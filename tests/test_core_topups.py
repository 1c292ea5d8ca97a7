"""Unit tests of the top-up engine on fakes: exactly once, whatever fails."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.jobs.worker import RetryLater
from core.meters.model import Meter
from core.meters.profiles import BUILTIN_PROFILES
from core.shared.errors import UpstreamError
from core.topups.model import TopUp, TopUpStatus
from core.topups.service import TopUpEngine, TopUpPolicy, requeue_stale_topups
from tests.fakes import FakeClock, FakeMeterGateway, FakeUnitOfWork


async def no_sleep(_seconds):
    return None


@pytest.fixture
def world():
    uow = FakeUnitOfWork()
    clock = FakeClock()
    tuya = FakeMeterGateway(clock=clock)
    for number, profile, balance in (("A101", "seed", "100"), ("B201", "tuya-standard", "10")):
        tuya.add(f"dev-{number}", profile, balance=balance)
        uow.store.meters[number] = Meter(id=number, number=number, name=number, device_id=f"dev-{number}",
                                         profile=profile, price_per_kwh=Decimal("25"), dp_specs=tuya.dp_specs(f"dev-{number}"))
    engine = TopUpEngine(uow=lambda: FakeUnitOfWork(uow.store), meters=tuya, profiles=BUILTIN_PROFILES, clock=clock,
                         policy=TopUpPolicy(max_attempts=4, confirm_deadline_s=0, poll_interval_s=0,
                                            send_window_s=0, report_settle_s=0), sleep=no_sleep)
    return uow, tuya, clock, engine


def add_topup(uow, meter="A101", amount="500", topup_id="t1", payment_id="p1") -> TopUp:
    now = FakeClock().now()
    topup = TopUp(id=topup_id, meter_id=meter, amount=Decimal(amount), created_at=now, updated_at=now,
                  payment_id=payment_id, next_attempt_at=now)
    uow.store.topups[topup.id] = topup
    return topup


def jobs_of(uow, kind):
    return [job for job in uow.store.jobs if job.kind == kind]


def stored(uow, topup_id="t1") -> TopUp:
    return uow.store.topups[topup_id]


async def run_until_done(engine, clock, topup_id="t1", limit=10):
    for _ in range(limit):
        try:
            return await engine.run(topup_id)
        except RetryLater as later:
            clock.advance(later.delay_s + 1)
    raise AssertionError("top-up never finished")


async def test_money_meter_credited_once_with_balances(world):
    uow, tuya, _clock, engine = world
    add_topup(uow)
    assert await engine.run("t1") is TopUpStatus.APPLIED
    topup = stored(uow)
    assert (topup.balance_before, topup.balance_after, topup.units_added) == (Decimal(100), Decimal(600), Decimal(500))
    assert topup.dp_code == "charge_money" and len(tuya.sent) == 1
    assert uow.store.meters["A101"].last_balance == Decimal(600)
    assert [j.payload["event"] for j in jobs_of(uow, "notify")] == ["topup_applied"]
    assert await engine.run("t1") is TopUpStatus.APPLIED and len(tuya.sent) == 1  # a rerun sends nothing


async def test_energy_meter_gets_kwh_rounded_down_with_remainder(world):
    uow, _tuya, _clock, engine = world
    add_topup(uow, meter="B201", amount="519.99")
    assert await engine.run("t1") is TopUpStatus.APPLIED
    topup = stored(uow)
    assert topup.dp_code == "charge_energy"
    assert topup.units_added * 25 + topup.remainder == Decimal("519.99")  # nothing lost
    assert topup.remainder < 25 * topup.units_added / topup.raw_value  # less than one step of energy
    assert topup.balance_after - topup.balance_before == topup.units_added


async def test_lost_answer_is_verified_not_resent(world):
    uow, tuya, clock, engine = world
    add_topup(uow)
    tuya.lose_answer = 1
    with pytest.raises(RetryLater):
        await engine.run("t1")
    assert stored(uow).status is TopUpStatus.SENDING and len(tuya.sent) == 1
    clock.advance(11)
    assert await engine.run("t1") is TopUpStatus.APPLIED
    assert len(tuya.sent) == 1 and tuya.meters["dev-A101"].status_values()["balance"] == 60000


async def test_accepted_but_not_applied_is_sent_again_once_verified(world):
    uow, tuya, clock, engine = world
    add_topup(uow)
    tuya.not_applied = 1
    assert await run_until_done(engine, clock) is TopUpStatus.APPLIED
    assert len(tuya.sent) == 1  # applied exactly once
    assert stored(uow).attempts == 2


async def test_offline_backs_off_keeps_slot_free_and_tells_payer_once(world):
    uow, tuya, clock, engine = world
    add_topup(uow)
    tuya.offline.add("dev-A101")
    delays = []
    for _ in range(3):
        with pytest.raises(RetryLater) as later:
            await engine.run("t1")
        delays.append(later.value.delay_s)
        assert stored(uow).status is TopUpStatus.QUEUED  # nothing sent: the meter's slot is free
        clock.advance(later.value.delay_s + 1)
    assert delays == [10, 30, 120]
    assert uow.store.meters["A101"].online is False  # shown to the landlord
    assert [j.payload["event"] for j in jobs_of(uow, "notify")] == ["topup_delayed"]
    tuya.offline.clear()
    assert await engine.run("t1") is TopUpStatus.APPLIED
    assert uow.store.meters["A101"].online is True


async def test_permanent_refusal_fails_at_once(world):
    uow, tuya, _clock, engine = world
    add_topup(uow)
    tuya.refuse = UpstreamError("Tuya error 1106: no permission", code="tuya_1106", transient=False)
    assert await engine.run("t1") is TopUpStatus.FAILED
    assert "1106" in stored(uow).last_error
    assert [j.payload["event"] for j in jobs_of(uow, "notify")] == ["topup_failed"]


async def test_attempts_exhausted_nothing_sent_fails(world):
    uow, tuya, clock, engine = world
    add_topup(uow)
    tuya.offline.add("dev-A101")
    assert await run_until_done(engine, clock) is TopUpStatus.FAILED
    assert stored(uow).attempts == 4 and tuya.sent == []


async def test_counter_moved_unexpectedly_goes_to_review(world):
    uow, tuya, clock, engine = world
    add_topup(uow)
    tuya.lose_answer = 1
    with pytest.raises(RetryLater):
        await engine.run("t1")
    meter = tuya.meters["dev-A101"]
    for code, value in meter.validate([{"code": "charge_money", "value": 10000}]):
        meter.apply(code, value)  # someone else credited KES 100 meanwhile
    clock.advance(11)
    assert await engine.run("t1") is TopUpStatus.NEEDS_REVIEW


async def test_one_in_flight_per_meter(world):
    uow, tuya, clock, engine = world
    add_topup(uow, topup_id="t1", payment_id="p1")
    add_topup(uow, topup_id="t2", payment_id="p2")
    tuya.lose_answer = 1
    with pytest.raises(RetryLater):
        await engine.run("t1")  # outcome unknown: t1 holds the meter
    with pytest.raises(RetryLater) as busy:
        await engine.run("t2")
    assert "in flight" in str(busy.value) and stored(uow, "t2").status is TopUpStatus.QUEUED
    clock.advance(11)
    assert await engine.run("t1") is TopUpStatus.APPLIED
    assert await engine.run("t2") is TopUpStatus.APPLIED
    assert len(tuya.sent) == 2


async def test_duplicate_job_during_an_attempt_does_nothing(world):
    uow, tuya, _clock, engine = world
    add_topup(uow)
    tuya.lose_answer = 1
    with pytest.raises(RetryLater):
        await engine.run("t1")
    with pytest.raises(RetryLater):
        await engine.run("t1")  # scheduled for later: a second job must not act now
    assert len(tuya.sent) == 1


async def test_sweep_requeues_stale_topups(world):
    uow, _tuya, clock, _engine = world
    add_topup(uow)
    clock.advance(3600)
    assert await requeue_stale_topups(uow=FakeUnitOfWork(uow.store), clock=clock, stale_s=600) == ["t1"]
    assert [j.payload for j in jobs_of(uow, "topup")] == [{"topup_id": "t1"}]


async def test_manual_topup_form_sent_twice_credits_once(world):
    from core.admin.operator import Actor, manual_topup

    uow, _tuya, clock, _engine = world
    args = dict(actor=Actor("amina"), uow=FakeUnitOfWork(uow.store), profiles=BUILTIN_PROFILES, clock=clock)
    first = await manual_topup("A101", "150", "refund", request_key="form-1", **args)
    again = await manual_topup("A101", "150", "refund", request_key="form-1", **args)
    other = await manual_topup("A101", "150", "refund", request_key="form-2", **args)
    assert again.id == first.id != other.id
    assert len(uow.store.topups) == 2 and len(uow.store.audit) == 2


# --- a slow meter: the cloud's status is a cache (issue 10, money hole 3) ----------------------------

def slow_engine(uow, tuya, clock, **policy) -> TopUpEngine:
    """As in production: a charge may leave up to 45 s after `sent_at`, and a meter gets 5 s more."""
    settings = dict(max_attempts=4, confirm_deadline_s=0, poll_interval_s=0, send_window_s=45,
                    report_settle_s=5, report_wait_s=900) | policy
    return TopUpEngine(uow=lambda: FakeUnitOfWork(uow.store), meters=tuya, profiles=BUILTIN_PROFILES, clock=clock,
                       policy=TopUpPolicy(**settings), sleep=no_sleep)


async def test_counter_reported_late_is_not_proof_so_no_second_charge(world):
    uow, tuya, clock, _ = world
    engine = slow_engine(uow, tuya, clock)
    tuya.meters["dev-A101"].report_late(120)  # the meter reports its DPs every two minutes
    add_topup(uow)
    assert await run_until_done(engine, clock, limit=20) is TopUpStatus.APPLIED
    assert len(tuya.sent) == 1  # the stale "unchanged" counter never led to a second charge
    assert tuya.meters["dev-A101"].status_values()["balance"] == 60000
    assert stored(uow).attempts == 2  # the send and the check that found it; the waits between are not counted


async def test_unchanged_counter_reported_after_the_send_is_sent_again_once(world):
    uow, tuya, clock, _ = world
    engine = slow_engine(uow, tuya, clock)
    tuya.not_applied = 1  # the cloud accepted it, the meter never acted; the meter reports promptly
    add_topup(uow)
    with pytest.raises(RetryLater):
        await engine.run("t1")  # sent, not shown
    clock.advance(11)
    with pytest.raises(RetryLater) as wait:
        await engine.run("t1")  # unchanged, but reported before the charge could have landed: wait
    assert "waiting for the meter to report" in stored(uow).last_error and tuya.sent == []
    assert 39 < wait.value.delay_s < 41  # until 50 s after the send
    clock.advance(wait.value.delay_s)
    assert await engine.run("t1") is TopUpStatus.APPLIED
    assert len(tuya.sent) == 1 and stored(uow).attempts == 2


async def test_counter_never_reported_goes_to_a_person(world):
    uow, tuya, clock, _ = world
    engine = slow_engine(uow, tuya, clock, report_wait_s=300)
    tuya.meters["dev-A101"].report_late(100_000)
    add_topup(uow)
    assert await run_until_done(engine, clock, limit=30) is TopUpStatus.NEEDS_REVIEW
    topup = stored(uow)
    assert len(tuya.sent) == 1 and "has not reported electric_total" in topup.last_error
    assert [j.payload["event"] for j in jobs_of(uow, "notify")][-1] == "topup_review"


async def test_confirm_polls_back_off_and_tuya_calls_are_counted(world):
    uow, tuya, clock, _ = world
    sleeps = []

    async def sleep(seconds):
        sleeps.append(seconds)
        clock.advance(seconds)

    engine = TopUpEngine(uow=lambda: FakeUnitOfWork(uow.store), meters=tuya, profiles=BUILTIN_PROFILES, clock=clock,
                         policy=TopUpPolicy(confirm_deadline_s=60, poll_interval_s=1), sleep=sleep)
    tuya.meters["dev-A101"].report_late(5)  # the charge shows at the meter's next report, 5 s on
    add_topup(uow)
    assert await engine.run("t1") is TopUpStatus.APPLIED
    assert sleeps == [1, 1.5, 2.25, 3.375]  # not one poll a second
    assert engine.tuya_calls["t1"] == 6  # status, send, four polls


async def test_configuration_error_fails_at_once_with_its_message(world):
    from gateways.tuya_errors import error_from_response

    uow, tuya, _clock, engine = world
    tuya.refuse = error_from_response({"success": False, "code": 28841002,
                                       "msg": "No permissions. Your subscription to cloud development plan has expired."})
    add_topup(uow)
    assert await engine.run("t1") is TopUpStatus.FAILED  # not retried as transient
    assert "plan has expired" in stored(uow).last_error and "platform.tuya.com" in stored(uow).last_error
