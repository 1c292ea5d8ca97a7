"""The demo's dashboard login. Its password is printed by `lipameter demo`, so it is reset on every
demo run: the printed login always works, whatever an earlier run left in the database."""

from __future__ import annotations

from datetime import datetime

from core.admin.auth import create_admin_user, hash_password
from core.shared.errors import Conflict
from storage.admin_users import SqlAdminUsers

DEMO_ADMIN = ("admin", "lipameter-demo")


async def ensure_demo_admin(users: SqlAdminUsers, *, now: datetime) -> tuple[str, str]:
    username, password = DEMO_ADMIN
    try:
        await create_admin_user(username, password, "admin", users=users, now=now, actor="demo")
    except Conflict:
        await users.set_password(username, hash_password(password))
    return DEMO_ADMIN
