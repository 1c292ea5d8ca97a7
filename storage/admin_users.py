"""Dashboard users and login attempts (core.ports.AdminUserStore and LoginAttempts). Each call is its own short
transaction: a login must not hold a lock while scrypt runs."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.admin.model import AdminUser, Role
from core.shared.errors import Conflict
from storage.tables import admin_users, audit_log, login_attempts


def _user(row) -> AdminUser | None:
    if row is None:
        return None
    values = dict(row._mapping)
    values["role"] = Role(values["role"])
    return AdminUser(**values)


class SqlAdminUsers:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, user: AdminUser, *, actor: str) -> AdminUser:
        """Adds the user and audits who created it, in one transaction."""
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(admin_users.insert().values(
                    username=user.username, password_hash=user.password_hash, role=user.role.value,
                    active=user.active, created_at=user.created_at))
                await conn.execute(audit_log.insert().values(
                    at=user.created_at, actor=actor, action="create_admin_user", target=user.username,
                    reason=None, details={"role": user.role.value}))
        except IntegrityError:
            raise Conflict(f"dashboard user {user.username!r} exists", code="admin_exists") from None
        user.id = result.inserted_primary_key[0]
        return user

    async def get(self, username: str) -> AdminUser | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(admin_users).where(admin_users.c.username == username))).first()
        return _user(row)

    async def touch_login(self, username: str, at: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(admin_users.update().where(admin_users.c.username == username)
                               .values(last_login_at=at))

    async def set_password(self, username: str, password_hash: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(admin_users.update().where(admin_users.c.username == username)
                                        .values(password_hash=password_hash, active=True,
                                                session_gen=admin_users.c.session_gen + 1))
        return result.rowcount > 0

    async def change(self, username: str, values: dict, *, end_sessions: bool, actor: str, action: str,
                     at: datetime) -> bool:
        """The change and its audit entry in one transaction; a changed value is never written to the log."""
        if end_sessions:
            values = {**values, "session_gen": admin_users.c.session_gen + 1}
        async with self.engine.begin() as conn:
            result = await conn.execute(admin_users.update().where(admin_users.c.username == username).values(values))
            if result.rowcount:
                details = {"role": values["role"]} if "role" in values else {}
                await conn.execute(audit_log.insert().values(at=at, actor=actor, action=action, target=username,
                                                             reason=None, details=details))
        return result.rowcount > 0

    async def end_sessions(self, username: str) -> None:
        """Logout: the signed cookie stays valid until it expires, unless its generation is left behind."""
        async with self.engine.begin() as conn:
            await conn.execute(admin_users.update().where(admin_users.c.username == username)
                               .values(session_gen=admin_users.c.session_gen + 1))

    async def list(self) -> list[AdminUser]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(admin_users).order_by(admin_users.c.username))
            return [_user(row) for row in rows]


class SqlLoginAttempts:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def record(self, *, at: datetime, username: str, address: str, success: bool) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(login_attempts.insert().values(at=at, username=username[:80],
                                                                       address=address[:64], success=success))
        return result.inserted_primary_key[0]

    async def forget(self, attempt_id: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(login_attempts.delete().where(login_attempts.c.id == attempt_id))

    async def failures(self, *, since: datetime, username: str | None = None, address: str | None = None) -> int:
        """Failures for one key (a username, an address, or the pair) within the window and after that
        key's last success."""
        key = [column == value for column, value in ((login_attempts.c.username, username),
                                                     (login_attempts.c.address, address)) if value is not None]
        last_success = (sa.select(sa.func.max(login_attempts.c.at))
                        .where(*key, login_attempts.c.success.is_(True)).scalar_subquery())
        query = (sa.select(sa.func.count()).select_from(login_attempts)
                 .where(*key, login_attempts.c.success.is_(False), login_attempts.c.at >= since,
                        sa.or_(last_success.is_(None), login_attempts.c.at > last_success)))
        async with self.engine.connect() as conn:
            return int(await conn.scalar(query) or 0)

    async def prune(self, *, before: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(login_attempts.delete().where(login_attempts.c.at < before))
