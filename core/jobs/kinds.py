"""Every job kind and its payload, in one place. A job row stores `kind` as the enum's string and
`payload` as the dataclass's `to_dict()`: rows written before this module existed read back the same.

Adding a job: a JobKind member, a frozen payload dataclass here, a handler in the worker's table
(web/services.py), and `enqueue(uow.jobs, Payload(...))` in the transaction that needs it.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Protocol


class JobKind(str, enum.Enum):
    PUSH_STK = "push_stk"  # send a requested payment's STK push
    VERIFY_PAYMENT = "verify_payment"  # ask Daraja about a callback we could not trust
    TOPUP = "topup"  # one attempt of the top-up engine
    NOTIFY = "notify"  # tell the payer what happened
    SAMPLE_READINGS = "sample_readings"  # read the meters that are due, within the Tuya call budget
    ALERT = "alert"  # tell a tenant their meter is low or empty


class NotifyEvent(str, enum.Enum):
    PAYMENT_FAILED = "payment_failed"
    TOPUP_APPLIED = "topup_applied"
    TOPUP_DELAYED = "topup_delayed"
    TOPUP_FAILED = "topup_failed"
    TOPUP_REVIEW = "topup_review"  # told as topup_failed; the landlord sees the review


class _Payload:
    kind: ClassVar[JobKind]

    def to_dict(self) -> dict[str, Any]:
        """The stored payload: plain strings, and no key for a field that is None."""
        return {key: getattr(value, "value", value) for key, value in asdict(self).items()  # type: ignore[call-overload]
                if value is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        return cls(**{field.name: data.get(field.name) for field in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class _ForPayment(_Payload):
    payment_id: str


class PushStk(_ForPayment):
    kind: ClassVar[JobKind] = JobKind.PUSH_STK


class VerifyPayment(_ForPayment):
    kind: ClassVar[JobKind] = JobKind.VERIFY_PAYMENT


@dataclass(frozen=True)
class RunTopUp(_Payload):
    kind: ClassVar[JobKind] = JobKind.TOPUP
    topup_id: str


@dataclass(frozen=True)
class Notify(_Payload):
    kind: ClassVar[JobKind] = JobKind.NOTIFY
    event: NotifyEvent
    payment_id: str | None = None
    topup_id: str | None = None
    # A resend: the SMS notification `resend_of` was refused by the recipient (opted out), so its text goes
    # to tenant `tenant_id` by `via` (telegram | whatsapp) only (core/notify/delivery.py).
    resend_of: int | None = None
    via: str | None = None
    tenant_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "event", NotifyEvent(self.event))


@dataclass(frozen=True)
class SampleReadings(_Payload):
    kind: ClassVar[JobKind] = JobKind.SAMPLE_READINGS


class AlertKind(str, enum.Enum):
    LOW = "low"  # below the threshold
    ZERO = "zero"  # the meter has cut the power: how to restore it


@dataclass(frozen=True)
class Alert(_Payload):
    kind: ClassVar[JobKind] = JobKind.ALERT
    alert: AlertKind
    meter_id: str
    tenant_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "alert", AlertKind(self.alert))


JobPayload = PushStk | VerifyPayment | RunTopUp | Notify | SampleReadings | Alert
PAYLOADS: dict[JobKind, type[_Payload]] = {cls.kind: cls for cls in (PushStk, VerifyPayment, RunTopUp, Notify,
                                                                     SampleReadings, Alert)}


class _Queue(Protocol):
    async def enqueue(self, kind: str, payload: dict, *, run_after: datetime | None = None) -> None: ...


async def enqueue(jobs: _Queue, payload: JobPayload, *, run_after: datetime | None = None) -> None:
    await jobs.enqueue(payload.kind.value, payload.to_dict(), run_after=run_after)


def handler_table(handlers: Mapping[JobKind, Callable[[Any], Awaitable[None]]]) -> dict[str, Callable[[dict], Awaitable[None]]]:
    """What the worker runs: by the stored kind string, each handler given its payload read back into its type."""

    def reading(kind: JobKind, handle: Callable[[Any], Awaitable[None]]) -> Callable[[dict], Awaitable[None]]:
        async def run(payload: dict) -> None:
            await handle(PAYLOADS[kind].from_dict(payload))
        return run

    return {kind.value: reading(kind, handle) for kind, handle in handlers.items()}
