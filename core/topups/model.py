"""The top-up: the effect of a completed payment (or a manual credit) on a meter.

queued --claim--> sending --accepted + balance confirmed--> applied
   ^                 |--outcome unknown--> verify --> applied | queued | needs_review
   '--transient------'--permanent error / attempts exhausted--> failed
An operator moves failed -> queued (retry) and needs_review -> applied | queued | failed (resolve).
`applied` never moves. Status changes only through TopUp's methods, which refuse any other move.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.payments.model import Channel, Payment
from core.shared.errors import Conflict
from core.shared.ids import new_id


class TopUpStatus(str, enum.Enum):
    QUEUED = "queued"
    SENDING = "sending"
    APPLIED = "applied"
    FAILED = "failed"
    NEEDS_REVIEW = "needs_review"

    @property
    def wire(self) -> str:
        return self.value.upper()


class IllegalTopUpTransition(Conflict):
    code = "illegal_transition"


class ClaimLost(Conflict):
    """This worker's attempt was taken over (its heartbeat stopped long enough: a network cut, a pause), so
    what it knows is stale: its saves are refused and the new holder decides by the meter's counter."""

    code = "claim_lost"


def _moves(*names: str) -> frozenset[TopUpStatus]:
    return frozenset(TopUpStatus(name) for name in names)


# from -> the states it may move to. Sending -> sending: a retry while a send may be in the air keeps
# the meter's in-flight slot; a claim of a top-up found in `sending` (a crash) resumes it.
TRANSITIONS: dict[TopUpStatus, frozenset[TopUpStatus]] = {
    TopUpStatus.QUEUED: _moves("sending"),
    TopUpStatus.SENDING: _moves("sending", "queued", "applied", "failed", "needs_review"),
    TopUpStatus.FAILED: _moves("queued"),  # an operator's retry
    TopUpStatus.NEEDS_REVIEW: _moves("applied", "queued", "failed"),  # an operator's resolution
    TopUpStatus.APPLIED: _moves(),
}


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
    # The worker whose attempt holds the top-up right now (None between attempts). When that worker's
    # heartbeat stops, another may take over before the lease ends: the counter check decides what landed.
    claimed_by: str | None = None

    def _move(self, to: TopUpStatus, now: datetime, *, sources: str) -> None:
        """`sources`: the statuses this step starts from (one step may not take every move the table allows)."""
        if self.status.value not in sources.split() or to not in TRANSITIONS[self.status]:
            raise IllegalTopUpTransition(f"top-up {self.id} is {self.status.value}; it cannot become {to.value}")
        self.status, self.updated_at = to, now

    def claim(self, *, now: datetime, lease_until: datetime, by: str | None = None) -> None:
        """An attempt starts: worker `by` owns the top-up until `lease_until` (its heartbeat renews it)."""
        self._move(TopUpStatus.SENDING, now, sources="queued sending")
        self.attempts += 1
        self.next_attempt_at, self.claimed_by = lease_until, by

    def release(self) -> None:
        """The attempt ends (whatever its outcome): no worker holds the top-up any more."""
        self.claimed_by = None

    def back_off(self, *, error: str, retry_at: datetime, now: datetime) -> None:
        """A transient failure. Only a top-up with nothing possibly in the air gives up its meter's slot."""
        self._move(TopUpStatus.QUEUED if self.sent_at is None else TopUpStatus.SENDING, now, sources="sending")
        self.last_error, self.next_attempt_at = error[:500], retry_at
        self.release()

    def mark_applied(self, *, by: str, now: datetime) -> None:
        """The meter shows the charge (the engine), or a person saw it there (a review)."""
        self._move(TopUpStatus.APPLIED, now, sources="sending needs_review")
        self.applied_at, self.applied_by, self.next_attempt_at = now, by, None
        self.release()

    def give_up(self, status: TopUpStatus, *, error: str, now: datetime) -> None:
        """An attempt ends for good: `failed` (nothing reached the meter) or `needs_review`."""
        if status not in (TopUpStatus.FAILED, TopUpStatus.NEEDS_REVIEW):
            raise IllegalTopUpTransition(f"a top-up gives up as failed or needs_review, not {status.value}")
        self._move(status, now, sources="sending")
        self.last_error, self.next_attempt_at = error[:500], None
        self.release()
        if status is TopUpStatus.NEEDS_REVIEW:
            self.resolved_at = self.resolved_by = None  # a new review (the audit log keeps the old one)

    def requeue(self, *, now: datetime) -> None:
        """An operator sends it again (a failed one, or a review that shows it did not land)."""
        self._move(TopUpStatus.QUEUED, now, sources="failed needs_review")
        self.attempts, self.next_attempt_at = 0, now
        self.release()

    def dismiss(self, *, now: datetime) -> None:
        """A review closed as not credited."""
        self._move(TopUpStatus.FAILED, now, sources="needs_review")


def topup_for_payment(payment: Payment, *, now: datetime) -> TopUp:
    return TopUp(
        id=new_id(),
        meter_id=payment.meter_id,
        amount=credit_for(payment),
        payment_id=payment.id,
        created_at=now,
        updated_at=now,
        next_attempt_at=now,
    )


def credit_for(payment: Payment) -> Decimal:
    """What a payment credits. An STK push asked for whole KES and was paid exactly that; a C2B payment
    is whatever the payer sent, to the cent (`paid_amount`; `amount` keeps only its whole KES)."""
    if payment.channel is Channel.C2B and payment.paid_amount is not None:
        return payment.paid_amount
    return Decimal(payment.amount)
