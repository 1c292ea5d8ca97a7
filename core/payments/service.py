"""Use cases for money in: start a payment, take Daraja's callback, settle from an STK query.

Every function takes its collaborators as keyword arguments (`uow`, `gateway`, `clock`). Network
calls happen outside transactions; state changes happen inside one, with the jobs they need.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from core.jobs.kinds import Notify, NotifyEvent, PushStk, RunTopUp, VerifyPayment, enqueue
from core.meters.lookup import find_meter
from core.meters.model import Meter
from core.payments import model as pm
from core.payments.callbacks import MalformedCallback, StkCallback, parse_stk_callback
from core.payments.model import Channel, Payment, PaymentStatus
from core.ports import Clock, PaymentGateway, StkPushRequest, UnitOfWork
from core.shared.errors import Conflict, InvalidInput, NotFound, UpstreamError
from core.shared.ids import new_id
from core.shared.money import parse_whole_kes
from core.shared.phone import mask_checkout_id, mask_phone, normalize_kenyan_mobile
from core.topups.model import topup_for_payment

log = logging.getLogger("lipameter.payments")

TRANSACTION_DESC_MAX = 13


@dataclass(frozen=True)
class PaymentLimits:
    min_amount: int = 1
    max_amount: int = 150_000


@dataclass(frozen=True)
class InitiatePayment:
    amount: object
    phone: object
    meter_ref: object  # the meter's id or its number
    description: str = ""
    channel: Channel = Channel.API
    idempotency_key: str | None = None
    tenant_id: str | None = None


@dataclass(frozen=True)
class PaymentStarted:
    payment: Payment
    replayed: bool  # True when an Idempotency-Key returned an earlier answer


async def request_payment(
    cmd: InitiatePayment, *, uow: UnitOfWork, limits: PaymentLimits, clock: Clock, defer_push: bool = False,
    push_delay_s: float = 0.0,
) -> PaymentStarted:
    """Validate and record the payment as `requested`. With `defer_push` a `push_stk` job sends it,
    `push_delay_s` later (USSD: an STK prompt does not show while the USSD session is still open)."""
    started, _meter = await _record_request(cmd, uow=uow, limits=limits, clock=clock, defer_push=defer_push,
                                            push_delay_s=push_delay_s)
    return started


PHONE_BUSY = "an M-Pesa prompt is already waiting on this phone; complete or cancel it first"


async def _record_request(
    cmd: InitiatePayment, *, uow: UnitOfWork, limits: PaymentLimits, clock: Clock, defer_push: bool = False,
    push_delay_s: float = 0.0, claim_push: bool = False,
) -> tuple[PaymentStarted, Meter]:
    """request_payment's work, and the meter. With `claim_push` the row is written with `pushed_at` set:
    the intent to push is recorded in the same statement as the payment (see `_claim_push`)."""
    amount = parse_whole_kes(cmd.amount, minimum=limits.min_amount, maximum=limits.max_amount)
    phone = normalize_kenyan_mobile(cmd.phone)
    # Without a job to enqueue, the payment's INSERT is the only write: no transaction around it (two round
    # trips fewer). The unique indexes refuse a second active payment or a reused key all the same.
    async with uow if defer_push else uow.autocommit():
        meter = await find_meter(uow, cmd.meter_ref)
        if not meter.active:
            raise InvalidInput(f"meter {meter.number} is not active", code="meter_inactive")
        if cmd.idempotency_key:
            earlier = await uow.payments.get_by_idempotency_key(cmd.idempotency_key)
            if earlier is not None:
                _same_request_or_raise(earlier, amount=amount, phone=phone, meter_id=meter.id)
                return PaymentStarted(earlier, replayed=True), meter
        now = clock.now()
        payment = Payment(
            id=new_id(), amount=amount, phone=phone, meter_id=meter.id, channel=cmd.channel,
            created_at=now, updated_at=now, tenant_id=cmd.tenant_id,
            description=(cmd.description or "")[:200], idempotency_key=cmd.idempotency_key,
            pushed_at=now if claim_push else None,
        )
        try:
            # No SELECT first: the unique indexes (one active payment a phone, one Idempotency-Key) refuse
            # the row, and a refusal is told apart below. One round trip instead of two.
            await uow.payments.add(payment)
        except Conflict:
            # A replay sent while the first request was still uncommitted lands here: it is a replay.
            earlier = await uow.payments.get_by_idempotency_key(cmd.idempotency_key) if cmd.idempotency_key else None
            if earlier is None:
                raise Conflict(PHONE_BUSY, code="payment_pending") from None
            _same_request_or_raise(earlier, amount=amount, phone=phone, meter_id=meter.id)
            return PaymentStarted(earlier, replayed=True), meter
        if defer_push:
            run_after = now + timedelta(seconds=push_delay_s) if push_delay_s > 0 else None
            await enqueue(uow.jobs, PushStk(payment.id), run_after=run_after)
        await uow.commit()
    log.info("payment %s requested: KES %s for meter %s from %s via %s",
             payment.id, amount, meter.number, mask_phone(phone), cmd.channel.value)
    return PaymentStarted(payment, replayed=False), meter


def _same_request_or_raise(earlier: Payment, *, amount: int, phone: str, meter_id: str) -> None:
    if (earlier.amount, earlier.phone, earlier.meter_id) != (amount, phone, meter_id):
        raise Conflict("Idempotency-Key was already used for a different payment", code="idempotency_mismatch")


# Daraja may have sent the prompt although we got no usable answer: never treat these as a refusal.
PUSH_OUTCOME_UNKNOWN = frozenset({"outcome_unknown", "bad_response"})


async def push_payment(payment_id: str, *, uow: UnitOfWork, gateway: PaymentGateway, clock: Clock,
                       verify: bool = False) -> Payment:
    """Send the STK push for a `requested` payment, at most once, and record Daraja's answer."""
    payment, meter = await _claim_push(payment_id, uow=uow, clock=clock)
    if meter is None:
        return payment  # pushed (or being pushed) already: a retried job, a replay, a crash
    return await _send_push(payment, meter, uow=uow, gateway=gateway, clock=clock, verify=verify)


async def _send_push(payment: Payment, meter: Meter, *, uow: UnitOfWork, gateway: PaymentGateway, clock: Clock,
                     verify: bool) -> Payment:
    """The push of a payment whose `pushed_at` is committed (claimed), and Daraja's answer recorded."""
    payment_id = payment.id
    request = StkPushRequest(
        phone=payment.phone, amount=payment.amount, account_reference=meter.number,
        description=(payment.description or f"Power {meter.number}")[:TRANSACTION_DESC_MAX],
    )
    try:
        accepted = await gateway.stk_push(request)
    except UpstreamError as error:
        if error.code in PUSH_OUTCOME_UNKNOWN:
            # It stays `requested`; the reconcile sweep hands it to a person, and a callback for it
            # is kept. Pushing again could put two prompts on the phone.
            log.error("payment %s: STK push outcome unknown (%s)", payment_id, error.code)
            return payment
        return await _record_push_failure(payment_id, error, uow=uow, clock=clock)
    return await _record_push_accepted(payment_id, accepted, uow=uow, clock=clock, verify=verify, sent=payment)


async def _claim_push(payment_id: str, *, uow: UnitOfWork, clock: Clock) -> tuple[Payment, Meter | None]:
    """Record the intent to push before pushing: a worker that dies mid-push leaves `pushed_at` set,
    and its successor does not push a second prompt."""
    async with uow:
        payment = await uow.payments.get_for_update(payment_id)
        if payment is None:
            raise NotFound(f"no payment {payment_id}", code="payment_not_found")
        if payment.status is not PaymentStatus.REQUESTED or payment.pushed_at is not None:
            return payment, None
        payment.pushed_at = payment.updated_at = clock.now()
        await uow.payments.save(payment)
        meter = await uow.meters.get(payment.meter_id)
        await uow.commit()
    return payment, meter


async def _record_push_failure(payment_id: str, error: UpstreamError, *, uow: UnitOfWork, clock: Clock) -> Payment:
    async with uow:
        payment = await uow.payments.get_for_update(payment_id)
        if payment.status is PaymentStatus.REQUESTED:  # not if reconcile gave it to a person meanwhile
            pm.mark_push_failed(payment, code=error.code, message=error.message, now=clock.now())
            await uow.payments.save(payment)
            await uow.commit()
    log.warning("payment %s: STK push refused (%s): %s", payment_id, error.code, error.message)
    return payment


async def _record_push_accepted(payment_id: str, accepted, *, uow: UnitOfWork, clock: Clock,
                                verify: bool = False, sent: Payment | None = None) -> Payment:
    """`sent`: the payment as the push left it (claimed, `requested`), when the caller has it."""
    checkout_id = accepted.checkout_request_id
    if sent is not None and uow.single_writer:
        recorded = await _record_push_alone(uow, sent, accepted, now=clock.now())
        if recorded is not None:
            return recorded
    async with uow:
        await uow.callbacks.lock_checkout(checkout_id)  # a callback for it waits for this transaction
        payment = await _mark_sent_pushed(uow, sent, accepted, now=clock.now()) if sent else None
        if payment is None:
            payment = await uow.payments.get_for_update(payment_id)
            if payment.status is PaymentStatus.REQUESTED:
                pm.mark_pushed(payment, merchant_request_id=accepted.merchant_request_id,
                               checkout_request_id=checkout_id, now=clock.now())
            elif payment.checkout_request_id is None:
                # Reconcile sent it to review while the push was slow: keep the ids so its callback is linked.
                payment.merchant_request_id, payment.checkout_request_id = accepted.merchant_request_id, checkout_id
            await uow.payments.save(payment)
        # Daraja can call back before we have written its CheckoutRequestID: such a callback was
        # kept as an orphan, and is applied now.
        for callback_id, body in await uow.callbacks.orphans_for(checkout_id):
            outcome = await _apply_callback(uow, payment, parse_stk_callback(body), clock=clock, verify=verify)
            await uow.callbacks.set_outcome(callback_id, outcome=outcome, checkout_request_id=checkout_id,
                                            payment_id=payment.id)
        await uow.commit()
    return payment


async def _record_push_alone(uow: UnitOfWork, sent: Payment, accepted, *, now: datetime) -> Payment | None:
    """The common case without a transaction, where the database has one writer at a time (SQLite): the
    UPDATE commits on its own, then no orphan waits for its CheckoutRequestID. A callback for it is applied
    in a transaction that holds the writer lock from its first statement, so it either committed its orphan
    before the UPDATE (which waited for it) and the read after the UPDATE sees it, or began after the UPDATE
    and finds the payment itself. None: the general path (an orphan to apply, or the row moved on). Two
    statements and no BEGIN or COMMIT while the one connection is held, instead of three trips."""
    async with uow.autocommit():
        payment = await _mark_sent_pushed(uow, sent, accepted, now=now)
        if payment is None or await uow.callbacks.orphans_for(accepted.checkout_request_id):
            return None
    return payment


async def _mark_sent_pushed(uow: UnitOfWork, sent: Payment, accepted, *, now: datetime) -> Payment | None:
    """The common case in one UPDATE instead of a locking read and an UPDATE: `sent`, moved to `pending`,
    written if the stored row is still `requested`. While it is, the row is `sent`: the push claim
    (`pushed_at`) is the only change to a requested payment that keeps it requested, and `sent` carries it;
    every other one (reconcile's review) moves it on, and then None: the caller reads the row again."""
    if sent.status is not PaymentStatus.REQUESTED:
        return None
    payment = replace(sent)
    pm.mark_pushed(payment, merchant_request_id=accepted.merchant_request_id,
                   checkout_request_id=accepted.checkout_request_id, now=now)
    return payment if await uow.payments.save_if(payment, was=PaymentStatus.REQUESTED) else None


async def initiate_payment(
    cmd: InitiatePayment, *, uow: UnitOfWork, gateway: PaymentGateway, limits: PaymentLimits, clock: Clock,
    verify: bool = False,
) -> PaymentStarted:
    # The payment is written already claimed for this push (one INSERT, no transaction): nothing else
    # pushes a payment the API started, and a crash before the push leaves it to reconcile, as before.
    started, meter = await _record_request(cmd, uow=uow, limits=limits, clock=clock, claim_push=True)
    if started.replayed:
        return started
    payment = await _send_push(started.payment, meter, uow=uow, gateway=gateway, clock=clock, verify=verify)
    return PaymentStarted(payment, False)


@dataclass(frozen=True)
class CallbackReceipt:
    callback_id: int
    # completed | settled | duplicate | orphan | mismatch | review | late_success | awaiting_verification
    # | malformed | error
    outcome: str
    payment_id: str | None


async def receive_callback(
    body: bytes, *, source: str | None, uow: UnitOfWork, clock: Clock, verify: bool, apply_now: bool = True
) -> CallbackReceipt:
    """Keep the raw body first, committed on its own, then apply it once. Malformed bodies are kept and
    refused. With `apply_now` it is applied before this returns; without, it waits `received` in the
    inbox for `apply_received_callbacks` (a worker), and the answer goes out as soon as it is kept."""
    text, source, now = storable_body(body), (source or "")[:64] or None, clock.now()
    try:
        parsed = parse_stk_callback(text)
    except MalformedCallback as error:
        await uow.keep_callback(body=text, source=source, received_at=now, outcome="malformed")
        raise InvalidInput(str(error), code="malformed_callback") from None
    callback_id = await uow.keep_callback(body=text, source=source, received_at=now,
                                          checkout_request_id=parsed.checkout_request_id)
    if not apply_now:
        return CallbackReceipt(callback_id, "queued", None)
    return await apply_kept_callback(callback_id, uow=uow, clock=clock, verify=verify, parsed=parsed)


async def apply_kept_callback(
    callback_id: int, *, uow: UnitOfWork, clock: Clock, verify: bool, parsed: StkCallback | None = None,
    wait: bool = True,
) -> CallbackReceipt:
    """Apply one kept callback exactly once: its row is locked and moved off `received` in the same
    transaction that applies it, so the request that kept it and any number of draining workers may all
    try; one applies, the others find it taken. A failure is recorded on it (`error`), for a person."""
    checkout_id = parsed.checkout_request_id if parsed else None
    try:
        async with uow:
            kept = await uow.callbacks.claim_received(callback_id, wait=wait)
            if kept is None:
                return CallbackReceipt(callback_id, "taken", None)
            if parsed is None:
                try:
                    parsed = parse_stk_callback(kept)
                except MalformedCallback:  # kept by an older version before it was parsed
                    await uow.callbacks.set_outcome(callback_id, outcome="malformed", checkout_request_id=None,
                                                    payment_id=None)
                    await uow.commit()
                    return CallbackReceipt(callback_id, "malformed", None)
                checkout_id = parsed.checkout_request_id
            payment = await uow.payments.get_by_checkout_id(parsed.checkout_request_id, for_update=True)
            if payment is None:
                # The push's answer may be committing this id right now: wait for it, then look again.
                await uow.callbacks.lock_checkout(parsed.checkout_request_id)
                payment = await uow.payments.get_by_checkout_id(parsed.checkout_request_id, for_update=True)
            outcome = "orphan" if payment is None else await _apply_callback(uow, payment, parsed, clock=clock,
                                                                             verify=verify)
            await uow.callbacks.set_outcome(callback_id, outcome=outcome, checkout_request_id=parsed.checkout_request_id,
                                            payment_id=payment.id if payment else None)
            await uow.commit()
    except Exception:
        # Never lose the body nor answer 5xx for it: the stored callback shows in the review list.
        log.exception("callback %s for %s could not be applied", callback_id, mask_checkout_id(checkout_id or "?"))
        await _set_outcome(uow, callback_id, "error", checkout_id, None)
        return CallbackReceipt(callback_id, "error", None)
    log.info("callback %s for %s: result %s -> %s", callback_id, mask_checkout_id(parsed.checkout_request_id),
             parsed.result_code, outcome)
    return CallbackReceipt(callback_id, outcome, payment.id if payment else None)


async def apply_received_callbacks(uow: Callable[[], UnitOfWork], *, clock: Clock, verify: bool, limit: int = 64,
                                   at_once: int = 4) -> int:
    """Drain the inbox: apply the callbacks kept but not applied (answered under a rush, or kept by a
    process that died before applying), oldest first, `at_once` at a time. Returns how many were listed;
    rows another worker is applying are skipped, not waited for."""
    async with uow() as unit:
        ids = await unit.callbacks.received(limit)
    gate = asyncio.Semaphore(at_once)

    async def apply(callback_id: int) -> None:
        async with gate:
            try:
                await apply_kept_callback(callback_id, uow=uow(), clock=clock, verify=verify, wait=False)
            except Exception:  # the database went away: the row stays `received` for the next drain
                log.warning("callback %s stays in the inbox; will try again", callback_id, exc_info=True)

    await asyncio.gather(*(apply(callback_id) for callback_id in ids))
    return len(ids)


def storable_body(body: bytes) -> str:
    """The body as text any database keeps: invalid UTF-8 and NUL bytes become U+FFFD."""
    return body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


async def _set_outcome(uow: UnitOfWork, callback_id: int, outcome: str, checkout_id: str | None,
                       payment_id: str | None) -> None:
    async with uow:
        await uow.callbacks.set_outcome(callback_id, outcome=outcome, checkout_request_id=checkout_id,
                                        payment_id=payment_id)
        await uow.commit()


async def _apply_callback(uow: UnitOfWork, payment: Payment, cb: StkCallback, *, clock: Clock, verify: bool) -> str:
    now = clock.now()
    if payment.status is not PaymentStatus.PENDING:
        return await _late_callback(uow, payment, cb, now=now)
    if not cb.succeeded:
        pm.settle(payment, result_code=cb.result_code, result_desc=cb.result_desc, now=now)
        await uow.payments.save(payment)
        await enqueue(uow.jobs, Notify(NotifyEvent.PAYMENT_FAILED, payment_id=payment.id))
        return "settled"
    problem = _unreadable_reason(cb) or await _receipt_taken_reason(uow, payment, cb)
    if problem:
        pm.send_to_review(payment, reason=problem, now=now)
        await uow.payments.save(payment)
        log.warning("payment %s sent to review: %s", payment.id, problem)
        return "review"
    if cb.amount is None or cb.amount != Decimal(payment.amount):
        reason = f"M-Pesa reported {cb.amount if cb.amount is not None else 'no amount'} paid for a KES {payment.amount} request"
        _record_success_fields(payment, cb)
        pm.send_to_review(payment, reason=reason, now=now)
        await uow.payments.save(payment)
        return "mismatch"
    if verify:
        _record_success_fields(payment, cb)
        await uow.payments.save(payment)
        await enqueue(uow.jobs, VerifyPayment(payment.id))
        return "awaiting_verification"
    await complete_and_queue_topup(uow, payment, cb, now=now)
    return "completed"


def _unreadable_reason(cb: StkCallback) -> str | None:
    if not cb.unreadable:
        return None
    return f"M-Pesa says paid, but its {' and '.join(cb.unreadable)} could not be read (see the stored callback)"


async def _receipt_taken_reason(uow: UnitOfWork, payment: Payment, cb: StkCallback) -> str | None:
    """One M-Pesa receipt pays one payment: a receipt already on another payment is for a person."""
    if cb.receipt is None:
        return None
    other = await uow.payments.get_by_receipt(cb.receipt)
    if other is None or other.id == payment.id:
        return None
    return f"M-Pesa receipt {cb.receipt} is already recorded on payment {other.id}"


async def _late_callback(uow: UnitOfWork, payment: Payment, cb: StkCallback, *, now: datetime) -> str:
    """A callback for a payment we have settled already. A success carrying a receipt we have not
    recorded means the tenant paid after we decided otherwise: a person looks (issue 10, hole 1).
    Copies of a callback we applied, and late failures, change nothing."""
    if not cb.succeeded or payment.status not in pm.LATE_SUCCESS_FROM:
        return "duplicate"
    if cb.receipt is not None and cb.receipt == payment.mpesa_receipt:
        return "duplicate"
    if cb.receipt is None and payment.status is PaymentStatus.NEEDS_REVIEW and payment.resolved_at is None:
        return "duplicate"  # already waiting for a person, and this says nothing new
    note = ""
    if cb.amount is None or cb.amount != Decimal(payment.amount):
        note += f"; M-Pesa reported {cb.amount if cb.amount is not None else 'no amount'} paid for KES {payment.amount}"
    taken = _unreadable_reason(cb) or await _receipt_taken_reason(uow, payment, cb)
    if taken:
        note += f"; {taken}"
    elif payment.mpesa_receipt is None:
        _record_success_fields(payment, cb)
    elif cb.receipt:
        note += f"; second receipt {cb.receipt}"
    pm.reopen_for_late_success(payment, now=now, note=note)
    await uow.payments.save(payment)
    log.warning("payment %s: %s", payment.id, payment.review_reason)
    return "late_success"


def _record_success_fields(payment: Payment, cb: StkCallback) -> None:
    payment.mpesa_receipt = cb.receipt
    payment.transaction_date = cb.transaction_date
    payment.paid_amount = cb.amount
    payment.result_desc = cb.result_desc


async def complete_and_queue_topup(uow: UnitOfWork, payment: Payment, cb: StkCallback | None, *, now: datetime) -> None:
    pm.complete(
        payment,
        result_desc=cb.result_desc if cb else (payment.result_desc or "Confirmed by STK query"),
        receipt=cb.receipt if cb else payment.mpesa_receipt,
        transaction_date=cb.transaction_date if cb else payment.transaction_date,
        paid_amount=cb.amount if cb else (payment.paid_amount or Decimal(payment.amount)),
        now=now,
    )
    await uow.payments.save(payment)
    topup = topup_for_payment(payment, now=now)
    await uow.topups.add(topup)
    await enqueue(uow.jobs, RunTopUp(topup.id))
