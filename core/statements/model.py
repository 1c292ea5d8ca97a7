"""A monthly statement: what came in, what reached the meters, what was used, for one calendar month
in Nairobi time. Plain data; `storage/statements.py` fills it, web/ renders it as CSV or PDF.

Money is dated as in the ledger (storage/ledger.py): a payment and the credit it bought by the
payment's creation, a manual top-up by its own, so that within a month "credited" can never exceed
"paid". Balances and consumption are in the meter's unit (KES or kWh, as its profile keeps it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal

from core.shared.clock import NAIROBI
from core.shared.errors import InvalidInput

ZERO = Decimal(0)
MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")  # ASCII digits only
FIRST_YEAR = 2000


@dataclass(frozen=True)
class Month:
    first: date  # its first day

    @property
    def next(self) -> date:
        return date(self.first.year + self.first.month // 12, self.first.month % 12 + 1, 1)

    @property
    def days(self) -> int:
        return (self.next - self.first).days

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), NAIROBI)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.next, time(), NAIROBI)

    def __str__(self) -> str:
        return f"{self.first:%Y-%m}"


def parse_month(text: str | None, *, today: date) -> Month:
    """'2026-11' → that month; a malformed month or one that has not begun yet is refused."""
    match = MONTH.fullmatch((text or "").strip())
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < FIRST_YEAR:
        raise InvalidInput(f"the month must look like 2026-11 (year-month), not {(text or '')[:20]!r}",
                           code="bad_month")
    month = Month(date(int(match.group(1)), int(match.group(2)), 1))
    if month.first > today:
        raise InvalidInput(f"{month} has not begun yet (today is {today.isoformat()} in Nairobi)",
                           code="future_month")
    return month


@dataclass(frozen=True)
class PaymentLine:
    at: datetime
    receipt: str | None  # the M-Pesa receipt
    phone: str
    channel: str
    amount: Decimal


@dataclass(frozen=True)
class TopupLine:
    at: datetime | None  # applied at
    amount: Decimal  # KES
    receipt: str | None = None  # the payment's M-Pesa receipt, for a credit
    note: str = ""  # a manual top-up's reason and who gave it


@dataclass(frozen=True)
class Balance:
    value: Decimal
    at: date  # the day it was read (the last day before the month for an opening balance, when known)


@dataclass
class MeterStatement:
    number: str
    name: str
    unit: str  # KES or kWh: the balances' and consumption's unit
    opening: Balance | None = None
    closing: Balance | None = None
    consumption: Decimal | None = None  # None: no day of the month is covered by readings
    days_covered: int = 0
    payments: list[PaymentLine] = field(default_factory=list)
    credits: list[TopupLine] = field(default_factory=list)
    manual: list[TopupLine] = field(default_factory=list)
    waiting: Decimal = ZERO  # paid this month, not credited yet (queued, failed, in review)

    @property
    def paid(self) -> Decimal:
        return sum((line.amount for line in self.payments), ZERO)

    @property
    def credited(self) -> Decimal:
        return sum((line.amount for line in self.credits), ZERO)

    @property
    def manual_total(self) -> Decimal:
        return sum((line.amount for line in self.manual), ZERO)

    @property
    def check_ok(self) -> bool:
        return self.credited <= self.paid

    @property
    def empty(self) -> bool:
        return not (self.payments or self.credits or self.manual or self.waiting) \
            and self.opening is None and self.closing is None


@dataclass
class Statement:
    month: Month
    meters: list[MeterStatement]
    whole_property: bool  # False: one meter's statement
    made_at: datetime

    @property
    def paid(self) -> Decimal:
        return sum((m.paid for m in self.meters), ZERO)

    @property
    def credited(self) -> Decimal:
        return sum((m.credited for m in self.meters), ZERO)

    @property
    def manual_total(self) -> Decimal:
        return sum((m.manual_total for m in self.meters), ZERO)

    @property
    def waiting(self) -> Decimal:
        return sum((m.waiting for m in self.meters), ZERO)

    @property
    def check_ok(self) -> bool:
        return self.credited <= self.paid

    @property
    def empty(self) -> bool:
        return all(m.empty for m in self.meters)

    def consumption_by_unit(self) -> dict[str, Decimal]:
        """KES and kWh meters cannot be added together: one total per unit."""
        totals: dict[str, Decimal] = {}
        for meter in self.meters:
            if meter.consumption is not None:
                totals[meter.unit] = totals.get(meter.unit, ZERO) + meter.consumption
        return dict(sorted(totals.items()))

    @property
    def empty_note(self) -> str:
        what = "this meter" if not self.whole_property else "any meter"
        return f"No payments, top-ups or readings for {what} in {self.month}."
