"""Dashboard users: password hashing, the login rules (core, with fakes), the throttle's storage on
both engines, the 0004 migration, and `lipameter admin create`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.admin.auth import (
    BadCredentials,
    Throttled,
    authenticate,
    create_admin_user,
    hash_password,
    verify_password,
)
from core.admin.model import AdminUser, Role
from core.shared.errors import Conflict, InvalidInput
from storage.admin_users import SqlAdminUsers, SqlLoginAttempts
from tests.cli_helpers import lipameter, with_database

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class FakeUsers:
    def __init__(self) -> None:
        self.users: dict[str, AdminUser] = {}

    async def add(self, user: AdminUser, *, actor: str) -> AdminUser:
        if user.username in self.users:
            raise Conflict("taken")
        self.users[user.username] = user
        return user

    async def get(self, username: str) -> AdminUser | None:
        return self.users.get(username)

    async def touch_login(self, username: str, at: datetime) -> None:
        self.users[username].last_login_at = at


class FakeAttempts:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    async def record(self, *, at, username, address, success) -> int:
        self.rows.append(dict(at=at, username=username, address=address, success=success))
        return len(self.rows) - 1

    async def forget(self, attempt_id) -> None:
        self.rows[attempt_id] = dict(self.rows[attempt_id], username=None, address=None)

    async def failures(self, *, since, username=None, address=None) -> int:
        key = {name: value for name, value in (("username", username), ("address", address)) if value is not None}
        mine = [r for r in self.rows if all(r[name] == value for name, value in key.items())]
        last_ok = max((r["at"] for r in mine if r["success"]), default=None)
        return sum(1 for r in mine if not r["success"] and r["at"] >= since and (last_ok is None or r["at"] > last_ok))


def test_password_hash_is_salted_scrypt_and_verifies_in_constant_time():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$16384$8$1$") and first != second  # a salt per user
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct horsE", first)
    assert not verify_password("correct horse", first[:-4] + "AAA=")
    assert not verify_password("x", "md5$abc") and not verify_password("x", "garbage")


@pytest.mark.parametrize("username, password, role, code", [
    ("a", "long-enough-pw", "admin", "invalid_username"), ("bad name", "long-enough-pw", "admin", "invalid_username"),
    ("ok", "short", "admin", "invalid_password"), ("ok", "long-enough-pw", "root", "invalid_role"),
])
async def test_new_users_are_validated(username, password, role, code):
    with pytest.raises(InvalidInput) as refused:
        await create_admin_user(username, password, role, users=FakeUsers(), now=NOW, actor="t")
    assert refused.value.code == code


async def test_login_rules():
    users, attempts = FakeUsers(), FakeAttempts()
    await create_admin_user("Boss", "boss-password-1", "admin", users=users, now=NOW, actor="t")
    with pytest.raises(Conflict):
        await create_admin_user("boss", "other-password", "viewer", users=users, now=NOW, actor="t")
    login = dict(address="10.0.0.1", users=users, attempts=attempts)
    user = await authenticate(" BOSS ", "boss-password-1", now=NOW, **login)
    assert user.role is Role.ADMIN and users.users["boss"].last_login_at == NOW
    guessing = NOW + timedelta(minutes=1)
    for _ in range(3):
        with pytest.raises(BadCredentials):
            await authenticate("boss", "wrong-password", now=guessing, **login)
    with pytest.raises(Throttled):
        await authenticate("boss", "boss-password-1", now=guessing, **login)
    # Throttled from where the guesses came from, not everywhere: the real user elsewhere gets in.
    elsewhere = {**login, "address": "10.0.0.2"}
    assert (await authenticate("boss", "boss-password-1", now=guessing, **elsewhere)).username == "boss"
    for _ in range(3):  # the delay grows: 6 failures in 15 minutes wait 15 minutes
        with pytest.raises((BadCredentials, Throttled)):
            await authenticate("boss", "wrong-password", now=guessing + timedelta(minutes=2), **login)
    with pytest.raises(Throttled, match="wait 15 minutes"):
        await authenticate("boss", "boss-password-1", now=guessing + timedelta(minutes=4), **login)
    # The window passes: the right password works again and resets the count.
    later = guessing + timedelta(minutes=16)
    assert (await authenticate("boss", "boss-password-1", now=later, **login)).username == "boss"
    users.users["boss"].active = False
    with pytest.raises(BadCredentials):
        await authenticate("boss", "boss-password-1", now=later, **login)


async def test_unknown_user_costs_a_hash_check_too():
    checked = []

    async def verify(password, encoded):
        checked.append(encoded)
        return False

    with pytest.raises(BadCredentials):
        await authenticate("ghost", "pw", address="a", users=FakeUsers(), attempts=FakeAttempts(), now=NOW,
                           verify=verify)
    assert len(checked) == 1 and checked[0].startswith("scrypt$")


async def test_attempts_count_failures_since_the_last_success(engine):
    attempts = SqlLoginAttempts(engine)
    for minute, ok in ((0, False), (1, False), (2, True), (3, False), (4, False)):
        await attempts.record(at=NOW + timedelta(minutes=minute), username="boss", address="10.0.0.1", success=ok)
    await attempts.record(at=NOW, username="other", address="10.0.0.2", success=False)
    since = NOW - timedelta(minutes=15)
    assert await attempts.failures(since=since, username="boss") == 2
    assert await attempts.failures(since=since, address="10.0.0.1") == 2
    assert await attempts.failures(since=NOW + timedelta(minutes=4), username="boss") == 1
    assert await attempts.failures(since=since, address="10.0.0.2") == 1
    await attempts.prune(before=NOW + timedelta(minutes=3))
    assert await attempts.failures(since=since, username="boss") == 2  # the success is gone; 3 and 4 stay
    users = SqlAdminUsers(engine)
    await users.add(AdminUser(None, "boss", hash_password("x" * 10), Role.VIEWER, created_at=NOW), actor="t")
    with pytest.raises(Conflict):
        await users.add(AdminUser(None, "boss", "h", Role.ADMIN, created_at=NOW), actor="t")
    assert (await users.get("boss")).role is Role.VIEWER


def test_migration_0004_goes_down_and_up(tmp_path):
    import sqlalchemy as sa
    from alembic import command

    from storage.migrate import alembic_config, upgrade

    url = f"sqlite+aiosqlite:///{tmp_path}/m.db"
    upgrade(url)
    command.downgrade(alembic_config(url), "0003")
    engine = sa.create_engine(f"sqlite:///{tmp_path}/m.db")
    try:
        assert "admin_users" not in sa.inspect(engine).get_table_names()
        upgrade(url)
        assert {"admin_users", "login_attempts"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_cli_admin_create(tmp_path, sqlite_template):
    import shutil

    shutil.copy(sqlite_template, tmp_path / "cli.db")
    env = with_database(f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    made = lipameter("admin", "create", "--username", "Wanjiru", "--role", "viewer", "--password-stdin",
                     env=env, stdin="a-long-password\n")
    assert made.returncode == 0, made.stderr
    assert "wanjiru (viewer) created" in made.stdout and "a-long-password" not in made.stdout
    again = lipameter("admin", "create", "--username", "wanjiru", "--password-stdin", env=env,
                      stdin="a-long-password\n")
    assert again.returncode == 2 and again.stderr.strip() == "lipameter: dashboard user 'wanjiru' exists"
    short = lipameter("admin", "create", "--username", "kamau", "--password-stdin", env=env, stdin="short\n")
    assert short.returncode == 2 and "password must be" in short.stderr and "Traceback" not in short.stderr
    no_tty = lipameter("admin", "create", "--username", "kamau", env=env)
    assert no_tty.returncode == 2 and "--password-stdin" in no_tty.stderr
    bad_role = lipameter("admin", "create", "--username", "kamau", "--role", "root", env=env)
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr
