"""When a meter is read next. Pure. Far from empty: every READINGS_EVERY_S. Close to its threshold,
more often, so that an alert is not an interval late: at 2x the threshold every third of it, under the
threshold every sixth (never more often than once a minute)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

MIN_EVERY_S = 60.0


def read_every_s(balance: Decimal | None, threshold: Decimal | None, every_s: float) -> float:
    if balance is None or threshold is None or threshold <= 0:
        return every_s
    if balance <= threshold:
        return max(MIN_EVERY_S, every_s / 6)
    if balance <= threshold * 2:
        return max(MIN_EVERY_S, every_s / 3)
    return every_s


def next_read_at(now: datetime, balance: Decimal | None, threshold: Decimal | None, every_s: float) -> datetime:
    return now + timedelta(seconds=read_every_s(balance, threshold, every_s))
