"""What an operator (landlord, admin) does to meters and top-ups. Every action is audited with who,
what, when and why; nothing here credits a meter except through the top-up engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.jobs.kinds import RunTopUp, enqueue
from core.meters.lookup import find_meter
from core.meters.model import Meter
from core.meters.profiles import DpSpec, MeterProfile, to_raw
from core.payments.c2b import assign_c2b, refund_c2b, unknown_account_payments
from core.payments.callbacks import MalformedCallback, parse_stk_callback
from core.payments.model import PaymentStatus
from core.ports import Clock, MeterGateway, UnitOfWork
from core.shared.errors import Conflict, InvalidInput, NotFound
from core.shared.ids import new_id
from core.shared.money import parse_amount, parse_price
from core.topups.decision import MeterReading, plan_charge, read_meter
from core.topups.model import TopUp, TopUpStatus, topup_for_payment


@dataclass(frozen=True)
class Actor:
    name: str

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidInput("who is acting must be named", code="actor_required")




def require_reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise InvalidInput("a reason is required", code="reason_required")
    return reason.strip()[:500]


def _profile_and_specs(meter: Meter, profiles: Mapping[str, MeterProfile]) -> tuple[MeterProfile, dict[str, DpSpec]]:
    profile = profiles.get(meter.profile)
    if profile is None:
        raise InvalidInput(f"meter {meter.number} has unknown profile {meter.profile!r}", code="unknown_profile")
    return profile, {code: DpSpec.from_dict(spec) for code, spec in (meter.dp_specs or {}).items()}


async def manual_topup(meter_number: str, amount: object, reason: str | None, *, actor: Actor, uow: UnitOfWork,
                       profiles: Mapping[str, MeterProfile], clock: Clock, request_key: str | None = None) -> TopUp:
    """The seed's fallback 2: an admin adds balance, through the same engine, with a reason.
    `request_key` (one per form shown) makes a double-clicked or re-sent form credit once."""
    reason, money = require_reason(reason), parse_amount(amount, cents=True)
    now = clock.now()
    if request_key:
        async with uow:
            earlier = await uow.topups.by_request_key(request_key[:64])
        if earlier is not None:
            return earlier
    async with uow:
        meter = await find_meter(uow, meter_number)
        profile, specs = _profile_and_specs(meter, profiles)
        plan_charge(profile, specs, money, meter.price_per_kwh)  # refuses 0, above the DP's max, no price
        topup = TopUp(id=new_id(), meter_id=meter.id, amount=money, created_at=now, updated_at=now,
                      next_attempt_at=now, applied_by=actor.name, reason=reason,
                      request_key=request_key[:64] if request_key else None)
        await uow.topups.add(topup)
        await enqueue(uow.jobs, RunTopUp(topup.id))
        await uow.audit.record(at=now, actor=actor.name, action="manual_topup", target=meter.number, reason=reason,
                               details={"topup_id": topup.id, "amount": str(money)})
        await uow.commit()
    return topup


async def find_topup(uow: UnitOfWork, ref: str) -> TopUp:
    topup = await uow.topups.get(ref, for_update=True) or await uow.topups.for_payment(ref)
    if topup is None:
        raise NotFound(f"no top-up for {ref!r} (give a payment id or a top-up id)", code="topup_not_found")
    return await uow.topups.get(topup.id, for_update=True)


async def retry_topup(ref: str, reason: str | None, *, actor: Actor, uow: UnitOfWork, clock: Clock) -> TopUp:
    """A failed top-up goes back to the queue. Only `failed` ones: nothing of them reached the meter."""
    reason = require_reason(reason)
    now = clock.now()
    async with uow:
        topup = await find_topup(uow, ref)
        if topup.status is not TopUpStatus.FAILED:
            raise Conflict(f"top-up is {topup.status.value}; only a failed top-up can be retried"
                           + (" (resolve a review instead)" if topup.status is TopUpStatus.NEEDS_REVIEW else ""),
                           code="not_retryable")
        # `sent_at` and `counter_before` stay: if a send is on record, the next attempt reads the
        # counter before sending anything (FAILED should mean nothing landed; this keeps it so).
        topup.requeue(now=now)
        topup.delay_notified = False
        await uow.topups.save(topup)
        await enqueue(uow.jobs, RunTopUp(topup.id))
        await uow.audit.record(at=now, actor=actor.name, action="retry_topup", target=topup.id, reason=reason,
                               details={"payment_id": topup.payment_id, "last_error": topup.last_error})
        await uow.commit()
    return topup


@dataclass(frozen=True)
class ReviewItem:
    kind: str  # payment | topup | callback (M-Pesa said paid for no payment of ours) | c2b (paid to an unknown account)
    id: str
    meter_id: str | None
    amount: Decimal
    reason: str
    since: datetime


async def list_reviews(*, uow: UnitOfWork) -> list[ReviewItem]:
    async with uow:
        payments = await uow.payments.in_review()
        topups = await uow.topups.in_review()
        orphans = await uow.callbacks.unresolved_orphans()
        unapplied = await uow.callbacks.unapplied()
    items = [ReviewItem("payment", p.id, p.meter_id, Decimal(p.amount), p.review_reason or "", p.updated_at)
             for p in payments]
    items += [ReviewItem("topup", t.id, t.meter_id, t.amount, t.last_error or "", t.updated_at) for t in topups]
    items += [_orphan_item(callback_id, body, received_at) for callback_id, body, received_at in orphans]
    items += [ReviewItem("callback", str(callback_id), None, Decimal(0),
                         f"M-Pesa callback for CheckoutRequestID {checkout_id or '(unreadable)'} was kept but could "
                         f"not be applied: check that payment by hand, then dismiss", received_at)
              for callback_id, checkout_id, received_at in unapplied]
    items += [ReviewItem("c2b", str(item.callback_id), None, item.body.amount or Decimal(0),
                         f"M-Pesa {item.body.trans_id}: {item.reason}; assign it to a meter or record a refund",
                         item.received_at)
              for item in await unknown_account_payments(uow=uow)]
    return sorted((item for item in items if item is not None), key=lambda item: item.since)


def _orphan_item(callback_id: int, body: str, received_at: datetime) -> ReviewItem | None:
    try:
        callback = parse_stk_callback(body)
    except MalformedCallback:
        return None
    if not callback.succeeded:
        return None  # no money moved: nothing for a person to do
    reason = (f"M-Pesa says {callback.receipt or 'a payment'} was paid for CheckoutRequestID "
              f"{callback.checkout_request_id}, which matches no payment: credit by hand, then dismiss")
    return ReviewItem("callback", str(callback_id), None, callback.amount or Decimal(0), reason, received_at)


RESOLUTIONS = {"payment": ("credit", "dismiss"), "topup": ("applied", "retry", "dismiss"), "callback": ("dismiss",),
               "c2b": ("assign", "refund")}


async def resolve_review(ref: str, reason: str | None, *, action: str, actor: Actor, uow: UnitOfWork,
                         clock: Clock, meter: str | None = None) -> str:
    """Close a review. Payment: `credit` (top it up) or `dismiss`. Top-up: `applied` (seen on the
    meter), `retry` (the meter shows it did not land) or `dismiss` (mark failed). Paid to an unknown
    account: `assign` (credit `meter`, once) or `refund` (the money was sent back in M-Pesa)."""
    reason, now = require_reason(reason), clock.now()
    if ref.isascii() and ref.isdigit() and action in RESOLUTIONS["c2b"]:
        if action == "assign":
            await assign_c2b(int(ref), meter, actor=actor.name, reason=reason, uow=uow, now=now)
        else:
            await refund_c2b(int(ref), actor=actor.name, reason=reason, uow=uow, now=now)
        return action
    if ref.isascii() and ref.isdigit():
        return await _resolve_orphan(int(ref), reason, action=action, actor=actor, uow=uow, now=now)
    async with uow:
        payment = await uow.payments.get_for_update(ref)
        topup = None if payment else await uow.topups.get(ref, for_update=True)
        kind = "payment" if payment else "topup" if topup else None
        if kind is None:
            raise NotFound(f"nothing in review with id {ref!r}", code="review_not_found")
        if action not in RESOLUTIONS[kind]:
            raise InvalidInput(f"a {kind} review is resolved with {' or '.join(RESOLUTIONS[kind])}", code="invalid_action")
        item = payment or topup
        waiting = PaymentStatus.NEEDS_REVIEW if payment else TopUpStatus.NEEDS_REVIEW
        if item.status is not waiting or item.resolved_at is not None:
            raise Conflict(f"{kind} {ref} is not waiting for review", code="not_in_review")
        item.resolved_at, item.resolved_by, item.resolution = now, actor.name, f"{action}: {reason}"
        if payment:
            await _resolve_payment(uow, payment, action, now)
        else:
            await _resolve_topup(uow, topup, action, actor, now)
        await uow.audit.record(at=now, actor=actor.name, action=f"resolve_{kind}", target=ref, reason=reason,
                               details={"action": action})
        await uow.commit()
    return action


async def _resolve_orphan(callback_id: int, reason: str, *, action: str, actor: Actor, uow: UnitOfWork,
                          now: datetime) -> str:
    if action not in RESOLUTIONS["callback"]:
        raise InvalidInput("an unmatched M-Pesa callback is resolved with dismiss (credit by hand first)",
                           code="invalid_action")
    async with uow:
        if not await uow.callbacks.resolve_orphan(callback_id):
            raise NotFound(f"no unmatched callback {callback_id} waits for review", code="review_not_found")
        await uow.audit.record(at=now, actor=actor.name, action="resolve_callback", target=str(callback_id),
                               reason=reason, details={"action": action})
        await uow.commit()
    return action


async def _resolve_payment(uow: UnitOfWork, payment, action: str, now) -> None:
    await uow.payments.save(payment)
    if action == "credit":
        topup = topup_for_payment(payment, now=now)
        await uow.topups.add(topup)
        await enqueue(uow.jobs, RunTopUp(topup.id))


async def _resolve_topup(uow: UnitOfWork, topup: TopUp, action: str, actor: Actor, now) -> None:
    if action == "applied":
        topup.mark_applied(by=actor.name, now=now)
    elif action == "retry":
        topup.requeue(now=now)
        topup.sent_at = topup.counter_before = None
        await enqueue(uow.jobs, RunTopUp(topup.id))
    else:
        topup.dismiss(now=now)
    await uow.topups.save(topup)


# --- meter commands -------------------------------------------------------------------------------

async def read_balance(meter_number: str, *, uow: UnitOfWork, meters: MeterGateway,
                       profiles: Mapping[str, MeterProfile], clock: Clock) -> tuple[Meter, MeterReading]:
    async with uow:
        meter = await find_meter(uow, meter_number)
    profile, specs = _profile_and_specs(meter, profiles)
    reading = read_meter(profile, specs, await meters.status(meter.device_id))
    async with uow:
        meter = await find_meter(uow, meter_number)
        meter.last_balance, meter.last_energy = reading.money_balance, reading.energy_balance
        # Not `online`: the Tuya cloud answers status for an offline device too (its last report).
        meter.last_balance_at = clock.now()
        await uow.meters.save(meter)
        await uow.commit()
    return meter, reading


async def meter_command(meter_number: str, operation: str, value: object, *, actor: Actor, reason: str | None,
                        uow: UnitOfWork, meters: MeterGateway, profiles: Mapping[str, MeterProfile],
                        clock: Clock) -> Meter:
    """set_price (KES/kWh), prepayment_switch (bool) or clear: one command, audited."""
    async with uow:
        meter = await find_meter(uow, meter_number)
    profile, specs = _profile_and_specs(meter, profiles)
    code = getattr(profile, operation)
    if not code or code not in specs:
        raise InvalidInput(f"meter {meter.number} ({profile.name}) cannot {operation.replace('_', ' ')}",
                           code="unsupported_operation")
    price = parse_price(value) if operation == "set_price" else None
    raw = to_raw(price, specs[code]) if price is not None else bool(value) if operation == "prepayment_switch" else True
    await meters.send_commands(meter.device_id, [{"code": code, "value": raw}])
    now = clock.now()
    async with uow:
        meter = await find_meter(uow, meter_number)
        if price is not None:
            meter.price_per_kwh = price
            await uow.meters.save(meter)
        await uow.audit.record(at=now, actor=actor.name, action=operation, target=meter.number,
                               reason=reason, details={"code": code, "value": str(value)})
        await uow.commit()
    return meter


