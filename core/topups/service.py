"""The top-up engine: credit a meter exactly once.

The charge command has no idempotency key, so exactness comes from the meter's own counter
(`ChargePlan.check`, see core/topups/decision.py):
  1. claim: queued -> sending. The database allows one `sending` top-up per meter (a partial unique
     index), so two workers can never have two charges for one meter in the air.
  2. read the counter and the balance; record them and `sent_at` BEFORE sending (the intent).
  3. send, then poll until the counter shows the charge (a deadline, not a fixed sleep).
A top-up found in `sending` with `sent_at` set (a timeout, a crash) is resolved by reading the counter
again: risen by the charge -> applied; unchanged -> send; anything else -> needs_review.

An attempt records its worker (`claimed_by`); that worker's heartbeat renews the attempt's lease for as
long as the attempt runs, however slow. When the heartbeat stops (`kill -9`), another worker takes the
top-up over after `holder_silent_s` instead of waiting out the lease, and resolves it by the same counter
check: never a blind resend.

The cloud's status is a cache: each DP is as the device last reported it, and a slow meter reports
minutes late. So "unchanged" proves nothing unless the counter was reported after the command could
have reached the meter (`reports`, Tuya's shadow properties with each DP's report time); until then
the engine waits, and after `report_wait_s` a person looks. Every Tuya call is counted per top-up
(`tuya_calls`), for the bench and the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from core.jobs.kinds import Notify, NotifyEvent, RunTopUp, enqueue
from core.jobs.worker import RetryLater
from core.meters.model import Meter
from core.meters.profiles import DpSpec, MeterProfile
from core.ports import Clock, MeterGateway, UnitOfWork
from core.shared.errors import ConfigurationError, Conflict, DeviceOffline, InvalidInput, UpstreamError
from core.topups.decision import ChargePlan, Verdict, plan_charge, read_meter, reported_before
from core.topups.model import ClaimLost, TopUp, TopUpStatus
from core.usage.model import Reading, ReadingSource

log = logging.getLogger("lipameter.topup")

TERMINAL = (TopUpStatus.APPLIED, TopUpStatus.FAILED, TopUpStatus.NEEDS_REVIEW)


@dataclass(frozen=True)
class TopUpPolicy:
    max_attempts: int = 12
    confirm_deadline_s: float = 20.0
    # The first poll after a send; later ones back off. Most meters show a charge well within a second:
    # a first poll at 1 s cost each top-up most of its time (and a worker slot) for nothing.
    poll_interval_s: float = 0.3
    poll_backoff: float = 1.5
    poll_max_s: float = 5.0
    # A command may still leave up to `send_window_s` after `sent_at` (the gateway's call deadline);
    # a meter gets `report_settle_s` more to act on it. Only a counter reported after both proves
    # "not applied". Waiting for such a report ends in needs_review after `report_wait_s`.
    send_window_s: float = 45.0
    report_settle_s: float = 5.0
    report_wait_s: float = 900.0
    schedule_s: tuple[float, ...] = (10, 30, 120, 600, 1800)  # then hourly
    busy_retry_s: float = 3.0  # another top-up for the same meter is in flight
    attempt_lease_s: float = 180.0  # an attempt owns its top-up this long unless its worker's heartbeat renews it
    holder_silent_s: float = 15.0  # a worker silent this long is dead: its attempts are taken over
    delay_notice_after: int = 2  # attempts before the payer is told the credit is delayed

    def backoff_s(self, attempt: int) -> float:
        return self.schedule_s[attempt - 1] if attempt <= len(self.schedule_s) else 3600.0


@dataclass
class TopUpEngine:
    uow: Callable[[], UnitOfWork]
    meters: MeterGateway
    profiles: Mapping[str, MeterProfile]
    clock: Clock
    policy: TopUpPolicy = TopUpPolicy()
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Tuya calls made for each top-up (all its attempts in this process), most recent last.
    tuya_calls: OrderedDict[str, int] = field(default_factory=OrderedDict)
    keep_call_counts: int = 10_000
    holder: str | None = None  # this process's worker id, recorded on the top-ups its attempts hold
    # Top-ups with an attempt running in this process: the heartbeat renews exactly these leases.
    _running: Counter[str] = field(default_factory=Counter)

    def attempts_in_progress(self) -> list[str]:
        return sorted(self._running)

    def _tally(self, topup_id: str) -> None:
        self.tuya_calls[topup_id] = self.tuya_calls.pop(topup_id, 0) + 1
        while len(self.tuya_calls) > self.keep_call_counts:
            self.tuya_calls.popitem(last=False)

    async def run(self, topup_id: str) -> TopUpStatus:
        """One attempt. Raises RetryLater when it should run again; returns the status otherwise."""
        self._running[topup_id] += 1
        try:
            return await self._run(topup_id)
        finally:
            self._running[topup_id] -= 1
            if self._running[topup_id] <= 0:
                del self._running[topup_id]

    async def _run(self, topup_id: str) -> TopUpStatus:
        try:
            return await self._attempt_once(topup_id)
        except ClaimLost:
            # Another worker took this attempt over while we were cut off: it decides by the counter.
            log.warning("top-up %s: this attempt was taken over by another worker; leaving it to them", topup_id)
            raise RetryLater(self.policy.holder_silent_s, "taken over by another worker") from None

    async def _attempt_once(self, topup_id: str) -> TopUpStatus:
        topup, meter = await self._claim(topup_id)
        if topup.status in TERMINAL:
            return topup.status
        try:
            plan, profile, specs = self._plan(meter, topup)
        except InvalidInput as error:
            return await self._finish(topup, self._final_status(topup), error=error.message)
        try:
            return await self._attempt(topup, meter, plan, profile, specs)
        except InvalidInput as error:
            # The meter answered something we cannot use (a DP missing from its status, say).
            return await self._finish(topup, self._final_status(topup), error=error.message)
        except UpstreamError as error:
            if isinstance(error, ConfigurationError):
                log.error("top-up %s stopped by a configuration problem, fix it then retry: %s", topup.id,
                          error.message)
            if not error.transient:
                # A refusal (2008, 1101, 1106, 1004, 28841xxx ...). `failed` only if no charge may have landed.
                return await self._finish(topup, self._final_status(topup), error=error.message)
            return await self._retry_or_give_up(topup, error.message, offline=isinstance(error, DeviceOffline))

    @staticmethod
    def _final_status(topup: TopUp) -> TopUpStatus:
        """`failed` promises nothing reached the meter; after a send that may have landed, a person looks."""
        return TopUpStatus.FAILED if topup.sent_at is None else TopUpStatus.NEEDS_REVIEW

    # --- steps ------------------------------------------------------------------------------

    async def _claim(self, topup_id: str) -> tuple[TopUp, Meter | None]:
        now = self.clock.now()
        async with self.uow() as uow:
            topup = await uow.topups.get(topup_id, for_update=True)
            if topup is None:
                raise InvalidInput(f"no top-up {topup_id}")
            if topup.status in TERMINAL:
                return topup, None
            if topup.next_attempt_at and topup.next_attempt_at > now + timedelta(seconds=1):
                # Scheduled for later, or another attempt holds it (a duplicate job): not ours now,
                # unless the attempt's worker has stopped beating (it died mid-attempt).
                if not await self._holder_is_dead(uow, topup, now):
                    raise RetryLater(self._wait_s(topup, now), "not due yet")
                log.warning("top-up %s: worker %s stopped beating mid-attempt; taking over (the meter's counter "
                            "decides whether its charge landed)", topup.id, topup.claimed_by)
            topup.claim(now=now, lease_until=now + timedelta(seconds=self.policy.attempt_lease_s), by=self.holder)
            try:
                await uow.topups.save(topup)
            except Conflict:
                raise RetryLater(self.policy.busy_retry_s, "another top-up for this meter is in flight") from None
            meter = await uow.meters.get(topup.meter_id)
            await uow.commit()
        return topup, meter

    async def _holder_is_dead(self, uow: UnitOfWork, topup: TopUp, now: datetime) -> bool:
        if topup.status is not TopUpStatus.SENDING or not topup.claimed_by or topup.claimed_by == self.holder:
            return False
        return await uow.topups.holder_silent(topup.id, since=now - timedelta(seconds=self.policy.holder_silent_s))

    def _wait_s(self, topup: TopUp, now: datetime) -> float:
        """How long a job for a top-up that is not due waits. One held by a live attempt asks again once
        the holder could be declared dead, so a crash is noticed in seconds, not at the lease's end."""
        until_due = (topup.next_attempt_at - now).total_seconds()
        if topup.claimed_by:
            return min(until_due, self.policy.holder_silent_s)
        return until_due

    def _plan(self, meter: Meter, topup: TopUp) -> tuple[ChargePlan, MeterProfile, dict[str, DpSpec]]:
        profile = self.profiles.get(meter.profile)
        if profile is None:
            raise InvalidInput(f"meter {meter.number} has unknown profile {meter.profile!r}")
        specs = {code: DpSpec.from_dict(spec) for code, spec in (meter.dp_specs or {}).items()}
        if not specs:
            raise InvalidInput(f"meter {meter.number} has no stored DP specifications; re-add it")
        return plan_charge(profile, specs, topup.amount, meter.price_per_kwh), profile, specs

    async def _attempt(self, topup, meter, plan, profile, specs) -> TopUpStatus:
        self._tally(topup.id)
        status = await self.meters.status(meter.device_id)
        reading = read_meter(profile, specs, status)
        if plan.kind == "money" and reading.price:
            # A money meter converts at its own price: predict its energy counter with that price.
            plan = plan_charge(profile, specs, topup.amount, reading.price)
        counter_now = plan.check.value(status)
        if topup.sent_at is not None:
            # Values and report times from one answer: a status read a moment earlier could be staler.
            reports = await self._reports(topup, meter, plan)
            counter_now = plan.check.value({code: report.value for code, report in reports.items()})
            verdict = plan.check.verdict(topup.counter_before, counter_now)
            log.info("top-up %s: outcome of the last send was unknown; counter says %s", topup.id, verdict)
            if verdict == Verdict.APPLIED:
                return await self._applied(topup, meter, plan, profile, specs, status)
            if verdict == Verdict.AMBIGUOUS:
                return await self._finish(topup, TopUpStatus.NEEDS_REVIEW, error=(
                    f"meter counter moved by {counter_now - topup.counter_before}, expected "
                    f"{plan.check.expected_rise} or nothing: check the meter before crediting"))
            stale = reported_before(reports, self._proof_after(topup))
            if stale:
                return await self._wait_for_report(topup, stale)
        else:
            topup.balance_before = _balance(profile, reading)
        await self._record_intent(topup, plan, counter_now)
        try:
            self._tally(topup.id)
            await self.meters.send_commands(meter.device_id, [plan.command])
        except UpstreamError as error:
            if not error.transient:
                # Refused, so not applied; and the counter showed no earlier send had landed either.
                topup.sent_at = None
            raise
        return await self._confirm(topup, meter, plan, profile, specs)

    async def _reports(self, topup: TopUp, meter: Meter, plan: ChargePlan) -> dict:
        self._tally(topup.id)
        reports = await self.meters.reports(meter.device_id, list(plan.check.codes))
        missing = [code for code in plan.check.codes if code not in reports]
        if missing:
            raise InvalidInput(f"the cloud has no report of {', '.join(missing)} needed to verify the charge")
        return reports

    def _proof_after(self, topup: TopUp) -> datetime:
        """A counter reported after this moment would show a charge sent at `sent_at`."""
        return topup.sent_at + timedelta(seconds=self.policy.send_window_s + self.policy.report_settle_s)

    async def _wait_for_report(self, topup: TopUp, stale: list[str]) -> TopUpStatus:
        """The counter looks unchanged, but the meter has not reported it since the send: it may yet.
        Sending again now could charge twice; wait, and after `report_wait_s` a person looks."""
        now = self.clock.now()
        waited = (now - topup.sent_at).total_seconds()
        if waited >= self.policy.report_wait_s:
            return await self._finish(topup, TopUpStatus.NEEDS_REVIEW, error=(
                f"the meter has not reported {', '.join(stale)} since the charge was sent {waited:.0f}s ago: "
                "check the meter's purchase counter before crediting or sending again"))
        until_proof = (self._proof_after(topup) - now).total_seconds()
        delay = until_proof + 0.5 if until_proof > 0 else min(60.0, max(2.0, -until_proof / 2))
        # Waiting is not an attempt to credit: it does not count toward max_attempts.
        topup.attempts = max(0, topup.attempts - 1)
        topup.status, topup.next_attempt_at, topup.updated_at = TopUpStatus.SENDING, now + timedelta(seconds=delay), now
        topup.release()
        topup.last_error = f"waiting for the meter to report {', '.join(stale)} after the charge"
        await self._save(topup)
        log.info("top-up %s: counter unchanged but last reported before the charge could land; "
                 "asking again in %.0fs", topup.id, delay)
        raise RetryLater(delay, topup.last_error)

    async def _record_intent(self, topup: TopUp, plan: ChargePlan, counter_before: Decimal) -> None:
        topup.counter_before, topup.dp_code, topup.raw_value = counter_before, plan.code, plan.raw
        topup.remainder, topup.sent_at = plan.remainder, self.clock.now()
        # The claim's lease restarts here: the heartbeat renews it in the row, and this save writes it back.
        topup.next_attempt_at = topup.sent_at + timedelta(seconds=self.policy.attempt_lease_s)
        await self._save(topup)

    async def _confirm(self, topup, meter, plan, profile, specs) -> TopUpStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.confirm_deadline_s
        delay = self.policy.poll_interval_s
        while True:
            await self.sleep(delay)
            self._tally(topup.id)
            status = await self.meters.status(meter.device_id)
            verdict = plan.check.verdict(topup.counter_before, plan.check.value(status))
            if verdict == Verdict.APPLIED:
                return await self._applied(topup, meter, plan, profile, specs, status)
            if verdict == Verdict.AMBIGUOUS:
                return await self._finish(topup, TopUpStatus.NEEDS_REVIEW,
                                          error="meter counter moved by an unexpected amount after the charge")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UpstreamError("the meter accepted the charge but has not shown it yet",
                                    code="not_confirmed", transient=True)
            # Most meters show a charge within a second or two; slower ones are asked less often.
            delay = min(delay * self.policy.poll_backoff, self.policy.poll_max_s, remaining)

    async def _applied(self, topup, meter, plan, profile, specs, status) -> TopUpStatus:
        reading = read_meter(profile, specs, status)
        now = self.clock.now()
        topup.balance_after = _balance(profile, reading)
        topup.units_added = plan.money_added if plan.kind == "money" else plan.kwh_added
        topup.mark_applied(by=topup.applied_by or "worker", now=now)
        topup.last_error = None
        async with self.uow() as uow:
            await uow.topups.save(topup, held_by=self.holder)
            meter.last_balance = reading.money_balance
            meter.last_energy = reading.energy_balance
            meter.last_balance_at, meter.online = now, True
            await uow.meters.save(meter)
            # The balance after and what this top-up added: consumption is derived around credits.
            await uow.usage.add_reading(Reading(meter.id, now, topup.balance_after, ReadingSource.TOPUP,
                                                energy_total=reading.consumption_total, credit=topup.units_added))
            await enqueue(uow.jobs, Notify(NotifyEvent.TOPUP_APPLIED, topup_id=topup.id))
            await uow.commit()
        log.info("top-up %s applied to meter %s: %s -> %s (%d Tuya calls)", topup.id, meter.number,
                 topup.balance_before, topup.balance_after, self.tuya_calls.get(topup.id, 0))
        return TopUpStatus.APPLIED

    async def _retry_or_give_up(self, topup: TopUp, error: str, *, offline: bool = False) -> TopUpStatus:
        if topup.attempts >= self.policy.max_attempts:
            return await self._finish(topup, self._final_status(topup),
                                      error=f"gave up after {topup.attempts} attempts: {error}")
        delay = self.policy.backoff_s(topup.attempts)
        now = self.clock.now()
        topup.back_off(error=error, retry_at=now + timedelta(seconds=delay), now=now)
        tell_payer = topup.payment_id and not topup.delay_notified and topup.attempts >= self.policy.delay_notice_after
        topup.delay_notified = topup.delay_notified or bool(tell_payer)
        async with self.uow() as uow:
            await uow.topups.save(topup, held_by=self.holder)
            if offline:  # the landlord's dashboard counts offline meters
                meter = await uow.meters.get(topup.meter_id)
                meter.online = False
                await uow.meters.save(meter)
            if tell_payer:
                await enqueue(uow.jobs, Notify(NotifyEvent.TOPUP_DELAYED, topup_id=topup.id))
            await uow.commit()
        log.warning("top-up %s attempt %s failed (%s); next in %.0fs", topup.id, topup.attempts, error, delay)
        raise RetryLater(delay, error)

    async def _finish(self, topup: TopUp, status: TopUpStatus, *, error: str) -> TopUpStatus:
        now = self.clock.now()
        topup.give_up(status, error=error, now=now)
        async with self.uow() as uow:
            await uow.topups.save(topup, held_by=self.holder)
            event = NotifyEvent.TOPUP_FAILED if status is TopUpStatus.FAILED else NotifyEvent.TOPUP_REVIEW
            await enqueue(uow.jobs, Notify(event, topup_id=topup.id))
            await uow.commit()
        log.error("top-up %s %s: %s", topup.id, status.value, error)
        return status

    async def _save(self, topup: TopUp) -> None:
        topup.updated_at = self.clock.now()
        async with self.uow() as uow:
            await uow.topups.save(topup, held_by=self.holder)
            await uow.commit()


def _balance(profile: MeterProfile, reading) -> Decimal | None:
    """The balance a tenant reads: money where the meter keeps money, else kWh."""
    return reading.money_balance if profile.read_money_balance else reading.energy_balance


async def requeue_stale_topups(*, uow: UnitOfWork, clock: Clock, stale_s: float = 600,
                                holder_silent_s: float = 15.0) -> list[str]:
    """The sweep: a due top-up whose job was lost (a bug, a dead-lettered job) gets a new job, and so does
    one held by a worker whose heartbeat stopped (killed mid-attempt) without waiting out its lease.
    Running a top-up twice is safe (the claim and the counter check), so this only costs a read."""
    now = clock.now()
    async with uow:
        stale = await uow.topups.stale(before=now - timedelta(seconds=stale_s))
        orphaned = await uow.topups.held_by_silent_workers(since=now - timedelta(seconds=holder_silent_s))
        for topup in [*stale, *(t for t in orphaned if t.id not in {s.id for s in stale})]:
            if topup.claimed_by:
                log.warning("top-up %s: worker %s stopped beating mid-attempt; re-queued for a check of the "
                            "meter's counter", topup.id, topup.claimed_by)
            topup.next_attempt_at, topup.updated_at = now, now
            topup.release()
            await uow.topups.save(topup)
            await enqueue(uow.jobs, RunTopUp(topup.id))
        await uow.commit()
    ids = list(dict.fromkeys(t.id for t in [*stale, *orphaned]))
    if ids:
        log.warning("re-queued %d stale top-up(s)", len(ids))
    return ids
