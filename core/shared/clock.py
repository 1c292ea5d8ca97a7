"""Time. Stored and compared in UTC; Kenya's clock (Daraja's timestamps, what a tenant or landlord
reads) is `NAIROBI`, defined here once."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

NAIROBI = ZoneInfo("Africa/Nairobi")


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
