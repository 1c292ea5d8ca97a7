"""A dashboard user and their role: plain data, persisted by storage/admin_users.py."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Role(str, enum.Enum):
    ADMIN = "admin"  # everything
    VIEWER = "viewer"  # read only

    def may(self, needed: Role) -> bool:
        return self is Role.ADMIN or needed is Role.VIEWER


@dataclass
class AdminUser:
    id: int | None
    username: str
    password_hash: str
    role: Role
    active: bool = True
    created_at: datetime | None = None
    last_login_at: datetime | None = None
    # Part of every session cookie; raised to end all of the user's sessions at once (logout, a new
    # password, disabling): the cookie is signed, so this is how the server takes one back.
    session_gen: int = 0
