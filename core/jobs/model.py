"""The outbox job: plain data, persisted by `storage/`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class Job:
    """An outbox row: written in the same transaction as the state change that needs it."""

    id: int
    kind: str
    payload: dict
    attempts: int
    run_after: datetime
    status: str = "queued"
    last_error: str | None = None
