"""The tenant: plain data, persisted by `storage/`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class Tenant:
    id: str
    phone: str  # 2547XXXXXXXX
    name: str = ""
    language: str = "en"
    telegram_user_id: int | None = None
    telegram_chat_id: int | None = None
    created_at: datetime | None = None
