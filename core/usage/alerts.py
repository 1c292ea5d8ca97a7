"""Low-balance alerts: who is told what, and when. Pure except `check_alerts` and `send_alert`.

Each linked tenant is told once that their meter is low (below their own threshold, else the landlord's,
else about two days of the meter's use) and not again until it has been topped up (the balance is back
above the threshold by a margin, so a reading wobbling around it sends nothing). A meter at zero (it has
cut the power) sends one message on how to restore it. No low alert in quiet hours unless the meter will
run out before they end; the zero message is sent at once (the lights are already out).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from core.jobs.kinds import Alert, AlertKind, enqueue
from core.meters.model import Meter
from core.ports import Blocked, Clock, SmsSender, TelegramSender, UnitOfWork
from core.shared.clock import NAIROBI
from core.shared.errors import UpstreamError
from core.shared.phone import mask_phone
from core.usage.derive import hours_left
from core.usage.model import TenantAlert
from core.usage.texts import alert_text

log = logging.getLogger("lipameter.alerts")

RESET_MARGIN = Decimal("1.25")  # back above 125% of the threshold: topped up, alerts armed again


def parse_quiet_hours(value: str) -> tuple[int, int] | None:
    """"21-7" -> (21, 7): from 21:00 to 07:00 Nairobi time. Empty -> None (no quiet hours)."""
    value = (value or "").strip()
    if not value:
        return None
    start, sep, end = value.partition("-")
    if not sep or not start.strip().isascii() or not end.strip().isascii() \
            or not start.strip().isdigit() or not end.strip().isdigit():
        raise ValueError(f"{value!r} is not START-END hours, like 21-7")
    hours = int(start), int(end)
    if not all(0 <= hour <= 23 for hour in hours) or hours[0] == hours[1]:
        raise ValueError(f"{value!r}: hours must be 0..23 and differ")
    return hours


def quiet_until(now: datetime, quiet: tuple[int, int] | None) -> datetime | None:
    """When the quiet hours `now` falls in end; None when `now` is not in quiet hours."""
    if quiet is None:
        return None
    local = now.astimezone(NAIROBI)
    start, end = quiet
    inside = (start <= local.hour or local.hour < end) if start > end else (start <= local.hour < end)
    if not inside:
        return None
    until = local.replace(hour=end, minute=0, second=0, microsecond=0)
    if until <= local:
        until += timedelta(days=1)
    return until


@dataclass(frozen=True)
class Decision:
    send: AlertKind | None
    state: TenantAlert  # to save (sent marks set or cleared)


def decide(alert: TenantAlert, *, balance: Decimal | None, threshold: Decimal | None, average: Decimal | None,
           now: datetime, quiet: tuple[int, int] | None) -> Decision:
    if balance is None:  # no reading (offline): nothing to say, nothing to reset
        return Decision(None, alert)
    state = alert
    if balance > 0 and state.zero_sent_at is not None:
        state = replace(state, zero_sent_at=None)
    if threshold is not None and balance > threshold * RESET_MARGIN and state.low_sent_at is not None:
        state = replace(state, low_sent_at=None)
    if not state.enabled:
        return Decision(None, state)
    if balance <= 0:
        if state.zero_sent_at is None:
            return Decision(AlertKind.ZERO, replace(state, zero_sent_at=now, low_sent_at=state.low_sent_at or now))
        return Decision(None, state)
    if threshold is None or balance >= threshold or state.low_sent_at is not None:
        return Decision(None, state)
    until = quiet_until(now, quiet)
    if until is not None:
        left = hours_left(balance, average)
        runs_out_first = left is not None and now + timedelta(hours=float(left)) < until
        if not runs_out_first:
            return Decision(None, state)  # asked again after the quiet hours
    return Decision(AlertKind.LOW, replace(state, low_sent_at=now))


async def check_alerts(uow: UnitOfWork, meter: Meter, *, balance: Decimal | None, threshold: Decimal | None,
                       average: Decimal | None, now: datetime, quiet: tuple[int, int] | None) -> list[Alert]:
    """Decide for every tenant linked to the meter; the sent marks and the alert jobs commit together, so
    each alert is sent once even when two workers look at the same reading."""
    sent: list[Alert] = []
    async with uow:
        for tenant_id in await uow.usage.tenants_of(meter.id):
            current = await uow.usage.alert(tenant_id, meter.id)
            decision = decide(current, balance=balance, threshold=current.threshold or threshold, average=average,
                              now=now, quiet=quiet)
            if decision.state != current:
                await uow.usage.save_alert(decision.state)
            if decision.send is not None:
                job = Alert(decision.send, meter_id=meter.id, tenant_id=tenant_id)
                await enqueue(uow.jobs, job)
                sent.append(job)
        await uow.commit()
    return sent


@dataclass(frozen=True)
class BuyInfo:
    ussd_code: str = ""  # USSD_CODE
    paybill: str = ""  # the Daraja PayBill number, when payments go to a PayBill


async def send_alert(job: Alert, *, uow: UnitOfWork, sms: SmsSender | None, telegram: TelegramSender | None,
                     clock: Clock, buy: BuyInfo, days_left: Callable | None = None) -> str:
    async with uow:
        tenant = await uow.tenants.get(job.tenant_id)
        meter = await uow.meters.get(job.meter_id)
        current = await uow.usage.alert(job.tenant_id, job.meter_id)
    if tenant is None or meter is None or not current.enabled:
        return "nobody"
    body = alert_text(tenant.language, job.alert, meter=meter.number, balance=meter.last_balance,
                      ussd_code=buy.ussd_code, paybill=buy.paybill, telegram=tenant.telegram_chat_id is not None)
    event = f"alert_{job.alert.value}"
    if tenant.telegram_chat_id is not None and telegram is not None:
        try:
            await telegram.send(tenant.telegram_chat_id, body, buy_button=True)
            await _record(uow, clock, "telegram", event, tenant.phone, body, "sent", None)
            return "sent"
        except UpstreamError as failure:
            if failure.transient and not isinstance(failure, Blocked):
                raise
            await _record(uow, clock, "telegram", event, tenant.phone, body, "failed", failure.message[:255])
        body = alert_text(tenant.language, job.alert, meter=meter.number, balance=meter.last_balance,
                          ussd_code=buy.ussd_code, paybill=buy.paybill, telegram=False)
    status, error, channel, provider_id = "sent", None, "sms", None
    if sms is None:
        status, channel = "skipped", "log"
        log.info("SMS off; would alert %s: %s", mask_phone(tenant.phone), body)
    else:
        try:
            accepted = await sms.send(tenant.phone, body)
        except UpstreamError as failure:
            if failure.transient:
                raise
            status, error = "failed", failure.message[:255]
        else:
            provider_id = accepted.message_id if accepted is not None else None  # the delivery report's key
    await _record(uow, clock, channel, event, tenant.phone, body, status, error, provider_id)
    return status


async def _record(uow: UnitOfWork, clock: Clock, channel: str, event: str, phone: str, body: str, status: str,
                  error: str | None, provider_id: str | None = None) -> None:
    async with uow:
        await uow.notifications.add(at=clock.now(), channel=channel, event=event, recipient=mask_phone(phone),
                                    payment_id=None, topup_id=None, message=body[:480], status=status, error=error,
                                    provider_id=provider_id)
        await uow.commit()
