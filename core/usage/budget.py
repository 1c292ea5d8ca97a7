"""The Tuya call budget: TUYA_CALLS_PER_MINUTE, shared by every worker. Pure arithmetic; the state is one
database row updated under a lock (storage/usage.py), so all workers draw from the same bucket.

A plain token bucket of capacity C refilled at C a minute lets up to 2C calls into one minute (a full
bucket, then a minute of refill). So the bucket holds a small burst B and refills at (C - B) a minute:
any 60 seconds then see at most B + (C - B) = C calls, whatever the timing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True)
class Bucket:
    tokens: Decimal
    updated_at: datetime


def burst(per_minute: int) -> int:
    return max(1, per_minute // 6)


def refill_per_s(per_minute: int) -> Decimal:
    return Decimal(max(0, per_minute - burst(per_minute))) / 60


def take(bucket: Bucket | None, *, want: int, per_minute: int, now: datetime) -> tuple[int, Bucket]:
    """(calls granted, the bucket after): as many of `want` as whole tokens allow, never more."""
    capacity = Decimal(burst(per_minute))
    if bucket is None:
        bucket = Bucket(capacity, now)
    elapsed = Decimal(str(max(0.0, (now - bucket.updated_at).total_seconds())))
    tokens = min(capacity, bucket.tokens + elapsed * refill_per_s(per_minute))
    granted = max(0, min(want, int(tokens)))
    return granted, Bucket(tokens - granted, max(now, bucket.updated_at))
