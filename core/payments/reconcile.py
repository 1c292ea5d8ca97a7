"""Settle payments whose callback never came, and confirm callbacks when VERIFY_CALLBACKS is on.

A query result settles a payment exactly like a callback would, but only an answer known to be final
(0, or a code in FINAL_QUERY_FAILURE_CODES): anything else is asked again. A payment still without a
final answer past the give-up cutoff goes to a person (`needs_review`). A callback-confirmed success is never downgraded:
only `pending` payments are touched, under the row lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from core.jobs.kinds import Notify, NotifyEvent, enqueue
from core.payments import model as pm
from core.payments.model import FINAL_QUERY_FAILURE_CODES, PaymentStatus
from core.payments.service import complete_and_queue_topup
from core.ports import Clock, PaymentGateway, StkQueryResult, UnitOfWork
from core.shared.errors import UpstreamError

log = logging.getLogger("lipameter.reconcile")


@dataclass
class ReconcileReport:
    queried: int = 0
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    to_review: list[str] = field(default_factory=list)
    still_processing: int = 0


async def reconcile_payments(
    *, uow: UnitOfWork, gateway: PaymentGateway, clock: Clock, after_s: float, give_up_s: float
) -> ReconcileReport:
    report = ReconcileReport()
    now = clock.now()
    async with uow:
        stale_requests = await uow.payments.stale(PaymentStatus.REQUESTED.value, before=now - timedelta(seconds=after_s))
        stale_pending = await uow.payments.stale(PaymentStatus.PENDING.value, before=now - timedelta(seconds=after_s))
    for payment in stale_requests:
        # The process stopped between recording the request and recording Daraja's answer: the
        # push may or may not have reached the phone, so a person looks (an orphan callback may match).
        if await _to_review(uow, payment.id, "STK push outcome unknown (no answer recorded)", clock):
            report.to_review.append(payment.id)
    for payment in stale_pending:
        await _reconcile_one(payment, uow=uow, gateway=gateway, clock=clock, give_up_s=give_up_s, report=report)
    return report


async def _reconcile_one(payment, *, uow, gateway, clock, give_up_s, report) -> None:
    report.queried += 1
    try:
        result = await gateway.stk_query(payment.checkout_request_id)
    except UpstreamError as error:
        log.warning("payment %s: STK query failed: %s", payment.id, error.message)
        result = StkQueryResult(processing=True)
    if not is_final(result):
        age = (clock.now() - (payment.pushed_at or payment.created_at)).total_seconds()
        if age >= give_up_s and await _to_review(uow, payment.id, _give_up_reason(result), clock):
            report.to_review.append(payment.id)
        else:
            report.still_processing += 1
        return
    outcome = await settle_from_query(payment.id, result, uow=uow, clock=clock)
    {"completed": report.completed, "failed": report.failed, "review": report.to_review}.get(outcome, []).append(payment.id)


def is_final(result: StkQueryResult) -> bool:
    """Paid, or a failure Safaricom documents as final. "Still under processing" (4999 and the like)
    and codes nobody documented may yet become a payment."""
    if result.processing:
        return False
    if result.result_code == "0" or result.result_code in FINAL_QUERY_FAILURE_CODES:
        return True
    log.warning("STK query answered %r (%s): not known to be final; asking again later",
                result.result_code, (result.result_desc or "")[:120])
    return False


def _give_up_reason(result: StkQueryResult) -> str:
    if result.processing:
        return "no M-Pesa answer before the cutoff"
    desc = f" ({result.result_desc[:80]})" if result.result_desc else ""
    return f"STK query answered {result.result_code or '(no code)'}{desc}, not known to be final, until the cutoff"


async def settle_from_query(payment_id: str, result: StkQueryResult, *, uow: UnitOfWork, clock: Clock) -> str:
    if not is_final(result):
        return "unchanged"
    async with uow:
        payment = await uow.payments.get_for_update(payment_id)
        if payment is None or payment.status is not PaymentStatus.PENDING:
            return "unchanged"
        if result.result_code == "0":
            await complete_and_queue_topup(uow, payment, None, now=clock.now())
            outcome = "completed"
        elif payment.mpesa_receipt:
            # A success callback is on file (awaiting verification): the two disagree, a person decides.
            pm.send_to_review(payment, reason=f"callback said paid, STK query says {result.result_code}", now=clock.now())
            await uow.payments.save(payment)
            outcome = "review"
        else:
            pm.settle(payment, result_code=result.result_code or "unknown", result_desc=result.result_desc or "", now=clock.now())
            await uow.payments.save(payment)
            await enqueue(uow.jobs, Notify(NotifyEvent.PAYMENT_FAILED, payment_id=payment.id))
            outcome = "failed"
        await uow.commit()
    log.info("payment %s settled by STK query: %s", payment_id, outcome)
    return outcome


async def verify_payment(payment_id: str, *, uow: UnitOfWork, gateway: PaymentGateway, clock: Clock) -> str:
    """VERIFY_CALLBACKS: a success callback is credited only once an STK query confirms it."""
    async with uow:
        payment = await uow.payments.get(payment_id)
    if payment is None or payment.status is not PaymentStatus.PENDING:
        return "unchanged"
    result = await gateway.stk_query(payment.checkout_request_id)  # UpstreamError: the job retries
    if not is_final(result):
        raise UpstreamError("M-Pesa is still processing this payment", code="processing", transient=True)
    async with uow:
        payment = await uow.payments.get_for_update(payment_id)
        if payment.status is not PaymentStatus.PENDING:
            return "unchanged"
        if result.result_code == "0":
            await complete_and_queue_topup(uow, payment, None, now=clock.now())
            outcome = "completed"
        else:
            reason = f"callback said paid, STK query says {result.result_code}: {result.result_desc}"
            pm.send_to_review(payment, reason=reason, now=clock.now())
            await uow.payments.save(payment)
            outcome = "review"
        await uow.commit()
    return outcome


async def _to_review(uow: UnitOfWork, payment_id: str, reason: str, clock: Clock) -> bool:
    async with uow:
        payment = await uow.payments.get_for_update(payment_id)
        if payment is None or payment.status.terminal:
            return False
        pm.send_to_review(payment, reason=reason, now=clock.now())
        await uow.payments.save(payment)
        await uow.commit()
    log.warning("payment %s sent to review: %s", payment_id, reason)
    return True
