"""The top-up: the effect of a completed payment (or a manual credit) on a meter.

queued --claim--> sending --accepted + balance confirmed--> applied
   ^                 |--outcome unknown--> verify --> applied | queued | needs_review
   '--transient------'--permanent error / attempts exhausted--> failed
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.shared.ids import new_id
from core.payments.model import Payment


class TopUpStatus(str, enum.Enum):
    QUEUED = "queued"
    SENDING = "sending"
    APPLIED = "applied"
    FAILED = "failed"
    NEEDS_REVIEW = "needs_review"

    @property
    def wire(self) -> str:
        return self.value.upper()


@dataclass
class TopUp:
    id: str
    meter_id: str
    amount: Decimal  # KES
    created_at: datetime
    updated_at: datetime
    payment_id: str | None = None  # None for a manual top-up
    status: TopUpStatus = TopUpStatus.QUEUED
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    dp_code: str | None = None
    raw_value: int | None = None
    counter_before: Decimal | None = None
    balance_before: Decimal | None = None
    balance_after: Decimal | None = None
    units_added: Decimal | None = None
    remainder: Decimal | None = None
    sent_at: datetime | None = None
    applied_at: datetime | None = None
    applied_by: str | None = None  # "worker" or an admin's name
    reason: str | None = None
    delay_notified: bool = False
    request_key: str | None = None  # a manual top-up's form submission: a double submit credits once
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None


def topup_for_payment(payment: Payment, *, now: datetime) -> TopUp:
    return TopUp(
        id=new_id(),
        meter_id=payment.meter_id,
        amount=Decimal(payment.amount),
        payment_id=payment.id,
        created_at=now,
        updated_at=now,
        next_attempt_at=now,
    )
