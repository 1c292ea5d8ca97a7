"""Payments the tenant starts from the M-Pesa menu (Pay Bill / Buy Goods): Daraja's C2B.

Validation (only when Safaricom has enabled external validation on the shortcode) decides whether
M-Pesa takes the money: we accept an account number that names an active meter and an amount within
the limits, so that a mistyped account keeps the money in the payer's wallet.

Confirmation says the money moved. Its raw body is stored first, in its own transaction; then it is
applied exactly once, keyed on TransID (the M-Pesa receipt): a `completed` payment on channel `c2b`
and a top-up through the same engine as an STK payment. When the account names no active meter
(validation off or down, a Till payment without an account), it waits for a person: "paid to an
unknown account", who assigns it to a meter (credited once) or records a refund.

Stored bodies live with the STK callbacks (`mpesa_callbacks`), told apart by `kind`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from core.jobs.kinds import RunTopUp, enqueue
from core.meters.model import Meter, account_key
from core.payments.c2b_body import C2bBody, parse_c2b
from core.payments.callbacks import MalformedCallback
from core.payments.model import Channel, Payment, PaymentStatus
from core.payments.service import PaymentLimits, storable_body
from core.ports import Clock, UnitOfWork
from core.shared.errors import Conflict, InvalidInput, NotFound
from core.shared.ids import new_id
from core.shared.money import format_kes
from core.shared.phone import mask_phone
from core.topups.model import topup_for_payment

log = logging.getLogger("lipameter.c2b")

VALIDATION, CONFIRMATION = "c2b_validation", "c2b_confirmation"
UNKNOWN_ACCOUNT = "unknown_account"  # a confirmation waiting for a person
# Outcomes of a confirmation that has taken its TransID: a copy of it changes nothing.
CLAIMED = ("completed", UNKNOWN_ACCOUNT, "assigned", "refunded")

# Safaricom's documented validation answers (Customer To Business, "Validation response").
ACCEPT = "0"
INVALID_MSISDN, INVALID_ACCOUNT, INVALID_AMOUNT = "C2B00011", "C2B00012", "C2B00013"
INVALID_KYC, INVALID_SHORTCODE, OTHER_ERROR = "C2B00014", "C2B00015", "C2B00016"


@dataclass(frozen=True)
class ValidationAnswer:
    result_code: str
    reason: str

    @property
    def accepted(self) -> bool:
        return self.result_code == ACCEPT

    def document(self) -> dict:
        return {"ResultCode": self.result_code, "ResultDesc": "Accepted" if self.accepted else "Rejected"}


@dataclass(frozen=True)
class C2bReceipt:
    callback_id: int
    outcome: str  # completed | unknown_account | duplicate | malformed | invalid_amount | error
    payment_id: str | None


def _describe(body: C2bBody) -> str:
    account = f"account {body.account!r}" if body.account else "no account number"
    return f"{format_kes(body.amount) if body.amount is not None else 'an unreadable amount'} with {account}"


async def _meter_for(uow: UnitOfWork, body: C2bBody) -> tuple[Meter | None, str]:
    """The one meter the account number names, or None and why not (one query)."""
    key = account_key(body.raw_account)
    if key is None:
        if not body.account:
            return None, ("a Till payment without an account number" if body.is_till
                          else "no account number was given")
        return None, f"account {body.account[:40]!r} is not a meter number"
    meters = await uow.meters.by_account(key)
    active = [meter for meter in meters if meter.active]
    if len(active) == 1:
        return active[0], ""
    if len(active) > 1:
        return None, f"account {key} matches {len(active)} meters: {', '.join(m.number for m in active)}"
    if meters:
        return None, f"meter {meters[0].number} is deactivated"
    return None, f"account {key} names no meter"


# --- validation ------------------------------------------------------------------------------------


async def validate_c2b(body: bytes, *, source: str | None, uow: UnitOfWork, clock: Clock, limits: PaymentLimits,
                       shortcode: str | None = None) -> ValidationAnswer:
    """Decide, store the request with its answer, answer. One lookup and one insert: Safaricom waits
    a few seconds at most. When the database cannot answer, reject (C2B00016): with the database down
    the confirmation could not be stored either, and a rejected payment keeps the money in the wallet."""
    text = storable_body(body)
    try:
        parsed = parse_c2b(text)
    except MalformedCallback as error:
        parsed, answer = None, ValidationAnswer(OTHER_ERROR, str(error))
    try:
        async with uow:
            if parsed is not None:
                answer = await _decide(uow, parsed, limits=limits, shortcode=shortcode)
            await uow.callbacks.add(body=text, source=_source(source), received_at=clock.now(), kind=VALIDATION,
                                    outcome="accepted" if answer.accepted else answer.result_code,
                                    trans_id=parsed.trans_id if parsed else None, note=answer.reason[:255] or None)
            await uow.commit()
    except Exception:
        log.exception("C2B validation could not be decided; rejecting (%s)", OTHER_ERROR)
        return ValidationAnswer(OTHER_ERROR, "could not be checked")
    log.info("C2B validation %s: %s -> %s %s", parsed.trans_id if parsed else "(malformed)",
             _describe(parsed) if parsed else "", answer.result_code, answer.reason)
    return answer


async def _decide(uow: UnitOfWork, body: C2bBody, *, limits: PaymentLimits, shortcode: str | None) -> ValidationAnswer:
    if shortcode and body.shortcode and body.shortcode != shortcode:
        return ValidationAnswer(INVALID_SHORTCODE, f"paid to shortcode {body.shortcode}, not {shortcode}")
    if body.amount is None or not limits.min_amount <= body.amount <= limits.max_amount:
        return ValidationAnswer(INVALID_AMOUNT, f"amount must be KES {limits.min_amount:,}..{limits.max_amount:,}")
    meter, why = await _meter_for(uow, body)
    if meter is None:
        return ValidationAnswer(INVALID_ACCOUNT, why)
    return ValidationAnswer(ACCEPT, f"meter {meter.number}")


# --- confirmation ----------------------------------------------------------------------------------


async def receive_c2b_confirmation(body: bytes, *, source: str | None, uow: UnitOfWork, clock: Clock) -> C2bReceipt:
    """Store the raw body first, in its own transaction, then apply it once. Malformed bodies and
    amounts of 0 or less are kept and refused (no money moved); an unknown account waits for a person;
    a failure while applying is recorded on the stored body (`error`) and shows in the review list."""
    text = storable_body(body)
    async with uow:
        callback_id = await uow.callbacks.add(body=text, source=_source(source), received_at=clock.now(),
                                              kind=CONFIRMATION)
        await uow.commit()
    try:
        parsed = parse_c2b(text)
    except MalformedCallback as error:
        await _set(uow, callback_id, "malformed", None, None, str(error))
        raise InvalidInput(str(error), code="malformed_callback") from None
    if parsed.amount is None or parsed.amount <= 0:
        await _set(uow, callback_id, "invalid_amount", parsed.trans_id, None, "amount missing, unreadable or not above 0")
        raise InvalidInput("TransAmount must be an amount above 0 with at most 2 decimals", code="invalid_amount")
    try:
        async with uow:
            outcome, payment_id, note = await _apply(uow, callback_id, parsed, now=clock.now())
            await uow.callbacks.set_c2b_outcome(callback_id, outcome=outcome, trans_id=parsed.trans_id,
                                                payment_id=payment_id, note=note)
            await uow.commit()
    except Conflict:
        # The receipt's unique index caught a copy that raced past the claim check: already applied.
        outcome, payment_id = "duplicate", None
        await _set(uow, callback_id, outcome, parsed.trans_id, None, None)
    except Exception:
        log.exception("C2B confirmation %s (%s) could not be applied", callback_id, parsed.trans_id)
        await _set(uow, callback_id, "error", parsed.trans_id, None, "could not be applied: check it by hand")
        return C2bReceipt(callback_id, "error", None)
    log.info("C2B confirmation %s %s: %s -> %s", callback_id, parsed.trans_id, _describe(parsed), outcome)
    return C2bReceipt(callback_id, outcome, payment_id)


async def _apply(uow: UnitOfWork, callback_id: int, body: C2bBody, *, now: datetime) -> tuple[str, str | None, str | None]:
    await uow.callbacks.lock_checkout(body.trans_id)  # copies of one TransID wait for each other (PostgreSQL)
    if await uow.payments.get_by_receipt(body.trans_id) is not None or await uow.callbacks.c2b_claimed(
            body.trans_id, claims=CLAIMED):
        return "duplicate", None, None
    meter, why = await _meter_for(uow, body)
    if meter is None:
        log.warning("C2B %s paid to an unknown account: %s", body.trans_id, why)
        return UNKNOWN_ACCOUNT, None, f"paid to an unknown account: {why}"[:255]
    payment = await credit_c2b(uow, body, meter, now=now)
    return "completed", payment.id, None


async def credit_c2b(uow: UnitOfWork, body: C2bBody, meter: Meter, *, now: datetime) -> Payment:
    """A completed C2B payment for `meter` and its top-up, in the caller's transaction. The receipt's
    unique index refuses a second payment for one TransID (Conflict)."""
    if body.amount is None:  # parse_confirmation refuses such a body; a credit must never guess
        raise InvalidInput(f"C2B {body.trans_id} has no amount", code="c2b_no_amount")
    tenant = await uow.tenants.get_by_phone(body.phone) if body.phone else None
    payment = Payment(
        id=new_id(), amount=int(body.amount), phone=body.phone or "", meter_id=meter.id, channel=Channel.C2B,
        created_at=now, updated_at=now, status=PaymentStatus.COMPLETED, tenant_id=tenant.id if tenant else None,
        description=f"{body.transaction_type or 'C2B'} {body.shortcode or ''} account {body.account or '-'}"[:200],
        mpesa_receipt=body.trans_id, transaction_date=body.trans_time, paid_amount=body.amount, result_code="0",
        result_desc="Confirmed by M-Pesa (C2B)", payer_name=body.payer_name, payer_msisdn=body.msisdn,
    )
    await uow.payments.add(payment)
    topup = topup_for_payment(payment, now=now)
    await uow.topups.add(topup)
    await enqueue(uow.jobs, RunTopUp(topup.id))
    log.info("C2B %s: %s for meter %s from %s", body.trans_id, format_kes(body.amount), meter.number,
             mask_phone(body.phone) if body.phone else "a masked MSISDN")
    return payment


async def _set(uow: UnitOfWork, callback_id: int, outcome: str, trans_id: str | None, payment_id: str | None,
               note: str | None) -> None:
    async with uow:
        await uow.callbacks.set_c2b_outcome(callback_id, outcome=outcome, trans_id=trans_id, payment_id=payment_id,
                                            note=note[:255] if note else None)
        await uow.commit()


def _source(source: str | None) -> str | None:
    return (source or "")[:64] or None


# --- a person decides ("paid to an unknown account") --------------------------------------------


@dataclass(frozen=True)
class UnknownAccountPayment:
    callback_id: int
    body: C2bBody
    reason: str
    received_at: datetime


async def unknown_account_payments(*, uow: UnitOfWork) -> list[UnknownAccountPayment]:
    async with uow:
        rows = await uow.callbacks.c2b_waiting(outcome=UNKNOWN_ACCOUNT)
    items = []
    for callback_id, text, received_at, note in rows:
        try:
            items.append(UnknownAccountPayment(callback_id, parse_c2b(text), note or "paid to an unknown account",
                                               received_at))
        except MalformedCallback:  # it was parsed before it was marked; kept for safety
            continue
    return items


async def assign_c2b(callback_id: int, meter_ref: object, *, actor: str, reason: str, uow: UnitOfWork,
                     now: datetime) -> Payment:
    """Credit a payment to an unknown account to the meter a person names, once: the stored body moves
    from `unknown_account` to `assigned` in the same transaction as the payment is written."""
    meter = None
    if isinstance(meter_ref, str) and meter_ref.strip():
        async with uow:
            meter = await _meter_named(uow, meter_ref)
    if meter is None:
        raise InvalidInput("name the meter to credit (--meter NUMBER)", code="meter_required")
    if not meter.active:
        raise InvalidInput(f"meter {meter.number} is not active", code="meter_inactive")
    async with uow:
        text = await uow.callbacks.c2b_body(callback_id, outcome=UNKNOWN_ACCOUNT)
        if text is None:
            raise NotFound(f"no payment to an unknown account waits as {callback_id}", code="review_not_found")
        body = parse_c2b(text)
        if await uow.payments.get_by_receipt(body.trans_id) is not None:
            raise Conflict(f"M-Pesa receipt {body.trans_id} is already credited", code="duplicate_receipt")
        payment = await credit_c2b(uow, body, meter, now=now)
        if not await uow.callbacks.c2b_move(callback_id, from_outcome=UNKNOWN_ACCOUNT, to_outcome="assigned",
                                            payment_id=payment.id):
            raise Conflict(f"payment {callback_id} was resolved meanwhile", code="not_in_review")
        await uow.audit.record(at=now, actor=actor, action="resolve_c2b", target=str(callback_id), reason=reason,
                               details={"action": "assign", "meter": meter.number, "payment_id": payment.id,
                                        "receipt": body.trans_id, "amount": str(body.amount)})
        await uow.commit()
    return payment


async def refund_c2b(callback_id: int, *, actor: str, reason: str, uow: UnitOfWork, now: datetime) -> None:
    """A person has refunded (reversed) the payment in M-Pesa: it leaves the review list, nothing is credited."""
    async with uow:
        if not await uow.callbacks.c2b_move(callback_id, from_outcome=UNKNOWN_ACCOUNT, to_outcome="refunded",
                                            payment_id=None):
            raise NotFound(f"no payment to an unknown account waits as {callback_id}", code="review_not_found")
        await uow.audit.record(at=now, actor=actor, action="resolve_c2b", target=str(callback_id), reason=reason,
                               details={"action": "refund"})
        await uow.commit()


async def _meter_named(uow: UnitOfWork, ref: str) -> Meter | None:
    key = account_key(ref)
    meters = await uow.meters.by_account(key) if key else []
    if len(meters) == 1:
        return meters[0]
    exact = await uow.meters.get_by_number(ref.strip())
    if exact is None and len(meters) > 1:
        raise InvalidInput(f"{ref!r} matches several meters; give its exact number", code="ambiguous_meter")
    return exact
