"""Performing the purchase dialogue's effects through the core services, for any channel.

`DialogueDeps` is what every channel shares (built once, in the composition root); `ChannelRules` is how
one channel differs: USSD defers the STK push a few seconds and gives a live balance read little time,
a chat pushes at once, waits longer and lists more payments. `core.dialogue.runner.DialogueRunner`
drives the dialogue with both; `perform` does one effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal

from core.dialogue import texts
from core.dialogue.types import (
    AlertInfo,
    AlertSaved,
    BalanceInfo,
    BalanceRead,
    Caller,
    Effect,
    FindMeter,
    LanguageSaved,
    ListPayments,
    MeterChoice,
    MeterFound,
    Outcome,
    PaymentRequested,
    PaymentsListed,
    ReadBalance,
    SaveAlert,
    SaveLanguage,
    StartPayment,
)
from core.meters.model import Meter
from core.meters.profiles import MeterProfile
from core.payments.model import Channel
from core.payments.service import InitiatePayment, PaymentLimits, request_payment
from core.ports import CallerLookup, Clock, MeterBalanceReader, PaymentHistory, UnitOfWork
from core.shared.errors import Conflict, DomainError
from core.shared.ids import new_id
from core.shared.phone import can_get_stk_prompt, mask_phone
from core.tenants.model import Tenant
from core.usage.model import TenantAlert
from core.usage.service import summarise, unit_of

log = logging.getLogger("lipameter.dialogue")


@dataclass(frozen=True)
class DialogueDeps:
    """What the dialogue needs from the rest of the system: the same for every channel."""

    uow: Callable[[], UnitOfWork]
    limits: PaymentLimits
    clock: Clock
    history: PaymentHistory
    balance_reader: MeterBalanceReader | None = None  # None: no live reader, last known values only
    on_payment_started: Callable[[Channel], None] | None = None  # metrics, labelled by channel
    paybill: str = ""  # PAYBILL_NUMBER, shown on the balance screen ("" shows nothing)
    profiles: Mapping[str, MeterProfile] = field(default_factory=dict)  # a meter's unit and how its use is derived
    callers: CallerLookup | None = None  # who is calling, in one read (None: read in a unit of work)


@dataclass(frozen=True)
class ChannelRules:
    """How one channel runs the dialogue."""

    channel: Channel  # recorded on the payments it starts
    balance_timeout_s: float  # how long a live meter read may take before the last known value is shown
    push_delay_s: float = 0.0  # the STK prompt goes out this long after the confirm
    history_lines: int | None = None  # payments listed (None: as many as the dialogue's own screen shows)


def choice(meter: Meter) -> MeterChoice:
    return MeterChoice(number=meter.number, name=meter.name)


async def find_caller(phone: str, uow: UnitOfWork) -> tuple[Tenant | None, list[Meter]]:
    """The tenant behind `phone` (if any) and their linked meters, as core.ports.CallerLookup gives them."""
    async with uow:
        tenant = await uow.tenants.get_by_phone(phone)
        meters = await uow.tenants.meters_of(tenant.id) if tenant else []
    return tenant, meters


def caller_of(phone: str, tenant: Tenant | None, meters: list[Meter], *, limits: PaymentLimits,
              payment_key: str | None = None, network_code: str = "", paybill: str = "") -> Caller:
    """The caller: the tenant's language (if a tenant) and the active meters they may pick."""
    return Caller(
        phone=phone, language=tenant.language if tenant else texts.DEFAULT_LANGUAGE,
        meters=tuple(choice(m) for m in meters if m.active), min_amount=limits.min_amount,
        max_amount=limits.max_amount, tenant_id=tenant.id if tenant else None, payment_key=payment_key,
        prompt_ok=can_get_stk_prompt(phone, network_code),
        paybill=paybill,
    )


async def perform(effect: Effect, caller: Caller, deps: DialogueDeps, rules: ChannelRules) -> Outcome:
    if isinstance(effect, FindMeter):
        return await _find_meter(effect, deps)
    if isinstance(effect, ReadBalance):
        return await _read_balance(effect, caller, deps, rules)
    if isinstance(effect, ListPayments):
        return PaymentsListed(tuple(await deps.history.recent(caller.phone, effect.limit)))
    if isinstance(effect, StartPayment):
        return await _start_payment(effect, caller, deps, rules)
    if isinstance(effect, SaveLanguage):
        return await _save_language(effect, caller, deps)
    if isinstance(effect, SaveAlert):
        return await _save_alert(effect, caller, deps)
    raise TypeError(f"unknown effect {type(effect).__name__}")


async def _find_meter(effect: FindMeter, deps: DialogueDeps) -> MeterFound:
    async with deps.uow() as uow:
        # Feature-phone keypads make lower case easy to type by accident; meter numbers are printed upper.
        meter = await uow.meters.get_by_number(effect.number) or await uow.meters.get_by_number(effect.number.upper())
    if meter is None:
        return MeterFound(number=effect.number, meter=None)
    return MeterFound(number=effect.number, meter=choice(meter), active=meter.active)


async def _read_balance(effect: ReadBalance, caller: Caller, deps: DialogueDeps,
                        rules: ChannelRules) -> BalanceRead:
    async with deps.uow() as uow:
        meter = await uow.meters.get_by_number(effect.meter.number)
    # Balances are for the meter's own tenants only; the dialogue offers no other, this makes sure.
    if meter is None or effect.meter.number not in {m.number for m in caller.meters}:
        return BalanceRead(BalanceInfo(meter=effect.meter, amount=None))
    live = await _live_balance(meter, deps, rules)
    if live is not None:
        info = BalanceInfo(meter=effect.meter, amount=live, live=True)
    else:
        age_s = None
        if meter.last_balance is not None and meter.last_balance_at is not None:
            age_s = max(0, int((deps.clock.now() - meter.last_balance_at).total_seconds()))
        info = BalanceInfo(meter=effect.meter, amount=meter.last_balance, age_s=age_s)
    return BalanceRead(await _with_outlook(info, meter, caller, deps))


FRESH_FOR_DAYS_LEFT = timedelta(days=1)  # an older last reading (the meter is offline) says nothing about now


async def _with_outlook(info: BalanceInfo, meter: Meter, caller: Caller, deps: DialogueDeps) -> BalanceInfo:
    """Days left at the meter's usual use (from its stored readings; the live read above is one of them)
    and the caller's alert setting for it."""
    now, profile = deps.clock.now(), deps.profiles.get(meter.profile)
    async with deps.uow() as uow:
        summary = await summarise(uow, meter, profile, now=now)
        alert = await uow.usage.alert(caller.tenant_id, meter.id) if caller.tenant_id else None
    fresh = summary.last_reading_at is not None and now - summary.last_reading_at <= FRESH_FOR_DAYS_LEFT
    return info.model_copy(update={
        "days_left": summary.days_left if fresh else None,
        "alert": _alert_info(alert, summary.threshold, unit_of(profile)) if alert else None,
    })


def _alert_info(alert: TenantAlert, meter_threshold: Decimal | None, unit: str) -> AlertInfo:
    return AlertInfo(enabled=alert.enabled, threshold=alert.threshold, meter_threshold=meter_threshold, unit=unit)


async def _save_alert(effect: SaveAlert, caller: Caller, deps: DialogueDeps) -> AlertSaved:
    """The caller's own alert setting for one of their meters (tenant_alerts); the sent marks are kept, so
    changing the level never re-sends an alert already sent since the last top-up."""
    if caller.tenant_id is None or effect.meter.number not in {m.number for m in caller.meters}:
        return AlertSaved(None)
    async with deps.uow() as uow:
        meter = await uow.meters.get_by_number(effect.meter.number)
        if meter is None:
            return AlertSaved(None)
        alert = await uow.usage.alert(caller.tenant_id, meter.id)
        if effect.enabled is not None:
            alert = replace(alert, enabled=effect.enabled)
        if effect.threshold is not None:
            alert = replace(alert, threshold=Decimal(effect.threshold))
        elif effect.automatic:
            alert = replace(alert, threshold=None)
        await uow.usage.save_alert(alert)
        profile = deps.profiles.get(meter.profile)
        summary = await summarise(uow, meter, profile, now=deps.clock.now())
        await uow.commit()
    log.info("alerts of %s on %s: %s", mask_phone(caller.phone), meter.number,
             "off" if not alert.enabled else (alert.threshold or "meter level"))
    return AlertSaved(_alert_info(alert, summary.threshold, unit_of(profile)))


async def _live_balance(meter: Meter, deps: DialogueDeps, rules: ChannelRules) -> Decimal | None:
    """The meter's balance read now, within the channel's time, or None: the tenant still gets an answer
    (the last known value) when the cloud is slow or failing."""
    if deps.balance_reader is None:
        return None
    try:
        return await asyncio.wait_for(deps.balance_reader.read_balance(meter), timeout=rules.balance_timeout_s)
    except Exception as error:  # a timeout or a cloud error: best effort only
        log.info("live balance of %s not read in time: %s", meter.number, type(error).__name__)
        return None


async def _start_payment(effect: StartPayment, caller: Caller, deps: DialogueDeps,
                         rules: ChannelRules) -> PaymentRequested:
    # Paid from another number: that phone gets the prompt; the tenant stays the caller (both get the receipt).
    cmd = InitiatePayment(amount=effect.amount, phone=effect.payer or caller.phone, meter_ref=effect.meter.number,
                          channel=rules.channel, idempotency_key=caller.payment_key, tenant_id=caller.tenant_id)
    try:
        started = await request_payment(cmd, uow=deps.uow(), limits=deps.limits, clock=deps.clock,
                                        defer_push=True, push_delay_s=rules.push_delay_s)
    except Conflict as error:
        # The same conversation confirmed twice at once (a gateway retry): the first one's payment stands.
        earlier = await _by_key(caller.payment_key, deps) if error.code == "payment_pending" else None
        if earlier:
            return PaymentRequested(ok=True, payment_id=earlier)
        return PaymentRequested(ok=False, code=error.code)
    except DomainError as error:
        log.info("%s payment from %s refused: %s", rules.channel.value, mask_phone(caller.phone), error.code)
        return PaymentRequested(ok=False, code=error.code)
    if not started.replayed and deps.on_payment_started:
        deps.on_payment_started(rules.channel)
    return PaymentRequested(ok=True, payment_id=started.payment.id)


async def _by_key(key: str | None, deps: DialogueDeps) -> str | None:
    if not key:
        return None
    async with deps.uow() as uow:
        payment = await uow.payments.get_by_idempotency_key(key)
    return payment.id if payment else None


async def _save_language(effect: SaveLanguage, caller: Caller, deps: DialogueDeps) -> LanguageSaved:
    """Remembered on the tenant; a caller who is not a tenant yet becomes one (with no meters linked)."""
    async with deps.uow() as uow:
        tenant = await uow.tenants.get_by_phone(caller.phone)
        if tenant is None:
            try:
                await uow.tenants.add(Tenant(id=new_id(), phone=caller.phone, language=effect.language,
                                             created_at=deps.clock.now()))
            except Conflict:  # the same phone in two conversations at once: one row is enough
                return LanguageSaved(effect.language)
        elif tenant.language != effect.language:
            tenant.language = effect.language
            await uow.tenants.save(tenant)
        await uow.commit()
    return LanguageSaved(effect.language)
