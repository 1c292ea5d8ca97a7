"""The payment (one STK push) and its state machine.

requested --push ok--> pending --ResultCode 0--> completed
    |                     |--ResultCode 1032--> cancelled
    '--push refused--> push_failed  |--other ResultCode--> failed
                          '--unprovable (amount mismatch, unverified, no answer)--> needs_review
failed | cancelled | push_failed | needs_review --M-Pesa says paid (a receipt we had not recorded)--> needs_review
A terminal state never moves otherwise: late and duplicate callbacks are recorded and change nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


class PaymentStatus(str, enum.Enum):
    REQUESTED = "requested"
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PUSH_FAILED = "push_failed"
    NEEDS_REVIEW = "needs_review"

    @property
    def terminal(self) -> bool:
        return self not in (PaymentStatus.REQUESTED, PaymentStatus.PENDING)

    @property
    def wire(self) -> str:
        """Upper case on the JSON API, as the seed shows it (`COMPLETED`)."""
        return self.value.upper()


class Channel(str, enum.Enum):
    API = "api"
    USSD = "ussd"
    TELEGRAM = "telegram"
    WHATSAPP = "whatsapp"
    DASHBOARD = "dashboard"
    C2B = "c2b"  # paid from the M-Pesa menu (Pay Bill / Buy Goods): Daraja's C2B confirmation


CANCELLED_RESULT_CODES = frozenset({"1032"})
# STK query ResultCodes known to be final without money (Safaricom's Daraja pages and well-known
# clients): insufficient funds, Party B unavailable, system busy, subscriber locked, expired, prompt
# not sent, cancelled, unreachable, wrong PIN, push error. Any other answer may still turn into a
# payment, so it never fails one: reconcile asks again, then hands it to a person.
FINAL_QUERY_FAILURE_CODES = frozenset({"1", "17", "26", "1001", "1019", "1025", "1032", "1037", "2001", "9999"})
# Settled without money, or left to a person: a later "paid" from M-Pesa sends these (back) to review.
LATE_SUCCESS_FROM = (PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.PUSH_FAILED,
                     PaymentStatus.NEEDS_REVIEW)
REVIEW_REASON_MAX = 255


@dataclass
class Payment:
    # id, amount, phone, meter_id, channel, idempotency_key and created_at are set when a payment is made and
    # never change: a save writes only the rest (storage/repositories.py:_SET_ONCE).
    id: str
    amount: int
    phone: str
    meter_id: str
    channel: Channel
    created_at: datetime
    updated_at: datetime
    status: PaymentStatus = PaymentStatus.REQUESTED
    tenant_id: str | None = None
    description: str = ""
    idempotency_key: str | None = None
    merchant_request_id: str | None = None
    checkout_request_id: str | None = None
    mpesa_receipt: str | None = None
    transaction_date: datetime | None = None
    paid_amount: Decimal | None = None
    result_code: str | None = None
    result_desc: str | None = None
    review_reason: str | None = None
    pushed_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    payer_name: str | None = None  # C2B: the names Daraja sends (may be masked; shown, never relied on)
    payer_msisdn: str | None = None  # C2B: MSISDN as it arrived (v2 masks or hashes it)
    extra: dict = field(default_factory=dict)


class IllegalTransition(Exception):
    pass


def _require(payment: Payment, *allowed: PaymentStatus) -> None:
    if payment.status not in allowed:
        raise IllegalTransition(f"payment {payment.id} is {payment.status.value}")


def mark_pushed(payment: Payment, *, merchant_request_id: str, checkout_request_id: str, now: datetime) -> None:
    _require(payment, PaymentStatus.REQUESTED)
    payment.status = PaymentStatus.PENDING
    payment.merchant_request_id = merchant_request_id
    payment.checkout_request_id = checkout_request_id
    payment.pushed_at = now
    payment.updated_at = now


def mark_push_failed(payment: Payment, *, code: str, message: str, now: datetime) -> None:
    _require(payment, PaymentStatus.REQUESTED)
    payment.status = PaymentStatus.PUSH_FAILED
    payment.result_code = code
    payment.result_desc = message
    payment.updated_at = now


def settle(payment: Payment, *, result_code: str, result_desc: str, now: datetime) -> None:
    """Apply a final M-Pesa answer (callback or query). Success goes through `complete` instead."""
    _require(payment, PaymentStatus.PENDING)
    payment.result_code = result_code
    payment.result_desc = result_desc
    payment.status = PaymentStatus.CANCELLED if result_code in CANCELLED_RESULT_CODES else PaymentStatus.FAILED
    payment.updated_at = now


def complete(
    payment: Payment,
    *,
    result_desc: str,
    receipt: str | None,
    transaction_date: datetime | None,
    paid_amount: Decimal | None,
    now: datetime,
) -> None:
    _require(payment, PaymentStatus.PENDING)
    payment.result_code = "0"
    payment.result_desc = result_desc
    payment.mpesa_receipt = receipt
    payment.transaction_date = transaction_date
    payment.paid_amount = paid_amount
    payment.status = PaymentStatus.COMPLETED
    payment.updated_at = now


def send_to_review(payment: Payment, *, reason: str, now: datetime) -> None:
    """Money may have moved but we cannot prove how much: a person decides, nothing is credited."""
    _require(payment, PaymentStatus.REQUESTED, PaymentStatus.PENDING)
    payment.status = PaymentStatus.NEEDS_REVIEW
    payment.review_reason = reason[:REVIEW_REASON_MAX]
    payment.updated_at = now


def reopen_for_late_success(payment: Payment, *, now: datetime, note: str = "") -> None:
    """M-Pesa says the tenant paid after we settled the payment without money (or after a person
    closed its review): a person decides again, so any earlier resolution is lifted."""
    _require(payment, *LATE_SUCCESS_FROM)
    reason = f"M-Pesa says paid after we settled it as {payment.status.value}{note}"
    payment.status = PaymentStatus.NEEDS_REVIEW
    payment.review_reason = reason[:REVIEW_REASON_MAX]
    payment.resolved_at = payment.resolved_by = payment.resolution = None
    payment.updated_at = now
