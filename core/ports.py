"""Ports: the small Protocols through which the core talks to the outside world.

Adapters live in `gateways/` (real services) and `storage/` (the database); tests use fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class StkPushRequest:
    phone: str  # 2547XXXXXXXX
    amount: int  # whole KES
    account_reference: str  # the meter number, <= 12 chars
    description: str  # <= 13 chars


@dataclass(frozen=True)
class StkPushAccepted:
    merchant_request_id: str
    checkout_request_id: str
    customer_message: str


@dataclass(frozen=True)
class StkQueryResult:
    """Daraja's STK push query answer. `processing` is True for 500.001.1001 (ask again later)."""

    processing: bool
    result_code: str | None = None
    result_desc: str | None = None


class PaymentGateway(Protocol):
    """M-Pesa Express (Daraja). Raises core.errors.UpstreamError with a tenant-readable message."""

    async def stk_push(self, request: StkPushRequest) -> StkPushAccepted: ...

    async def stk_query(self, checkout_request_id: str) -> StkQueryResult: ...


class Clock(Protocol):
    def now(self) -> datetime: ...  # timezone-aware UTC
