"""What `lipameter audit` reads from the books: plain figures, gathered by storage/integrity.py.

Kept apart from the rules (core/audit/checks.py) so the rules are pure and testable with hand-made facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class MeterMoney:
    """Per meter: M-Pesa money in, what the meter was credited for it, and manual credits (counted apart)."""

    meter_number: str
    paid: Decimal
    credited: Decimal
    manual: Decimal = Decimal(0)


@dataclass(frozen=True)
class TopUpInFlight:
    topup_id: str
    meter_number: str
    status: str
    age_s: float


@dataclass(frozen=True)
class ReviewItem:
    """An open review, named for the landlord without a phone number: "top-up KES 400 on meter A101"."""

    subject: str
    since: datetime  # when it went to review (its last update)


@dataclass(frozen=True)
class Facts:
    money: list[MeterMoney] = field(default_factory=list)
    completed_without_topup: list[str] = field(default_factory=list)  # payment ids
    payments_with_many_topups: list[tuple[str, int]] = field(default_factory=list)
    failed_without_reason: list[str] = field(default_factory=list)  # top-up ids
    in_flight: list[TopUpInFlight] = field(default_factory=list)
    payments_in_review: int = 0
    topups_in_review: int = 0
    receipts_used_twice: list[tuple[str, int]] = field(default_factory=list)
    callbacks_without_outcome: list[tuple[int, float]] = field(default_factory=list)  # (id, age s)
    jobs_past_lease: list[tuple[int, str, float]] = field(default_factory=list)  # (id, kind, overdue s)
    shared_devices: list[tuple[str, list[str]]] = field(default_factory=list)  # device id, meter numbers
    reviews: list[ReviewItem] = field(default_factory=list)  # open reviews, oldest first
    jobs_waiting: dict[str, int] = field(default_factory=dict)  # kind -> jobs queued or running
    oldest_job_age_s: float = 0.0  # the longest a due job has waited to run (0: none waiting)

    @property
    def oldest_waiting_topup_s(self) -> float:
        """Age of the oldest top-up not yet applied (queued or sending); 0 when none."""
        return max((t.age_s for t in self.in_flight), default=0.0)
