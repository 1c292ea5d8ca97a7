"""Dashboard users: password hashing, the login throttle, and the two use cases (create a user, log in).
Pure rules; the user is core.admin.model.AdminUser, its stores are ports in core.ports (AdminUserStore,
LoginAttempts), implemented in storage/admin_users.py."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from core.admin.model import AdminUser, Role
from core.ports import AdminUserStore, LoginAttempts
from core.shared.errors import Conflict, DomainError, InvalidInput, NotFound

# scrypt is memory-hard: n=2**14, r=8 needs 16 MiB per guess, so GPUs gain little. ~50 ms on a server.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**14, 8, 1, 32
MIN_PASSWORD_LEN, MAX_PASSWORD_LEN = 10, 256
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,39}$")

# Throttle: failures counted since that key's last success. Per (username, address), with delays that
# grow with the failures: 3 in a minute wait a minute, 6 in 15 minutes wait 15, 12 in a day wait a day.
# Never per username alone: then anyone could lock the real user out with five guesses from anywhere.
# Per address too, for one address spraying many usernames.
PAIR_TIERS = ((timedelta(minutes=1), 3), (timedelta(minutes=15), 6), (timedelta(hours=24), 12))
ADDRESS_TIER = (timedelta(minutes=15), 20)
# Bounds on the attempts table: a throttled address's further failures are not kept beyond this many in
# its window (the throttle holds all the same), and the sweep drops attempts older than the longest tier.
MAX_KEPT_FAILURES_PER_ADDRESS = 2 * ADDRESS_TIER[1]
KEEP_LOGIN_ATTEMPTS = timedelta(days=2)


class BadCredentials(DomainError):
    code = "bad_credentials"


class Throttled(DomainError):
    code = "throttled"


# --- passwords ------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=SCRYPT_DKLEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time compare; the parameters come from the stored hash so they can be raised later."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r),
                                p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Checked when the username is unknown, so that a miss costs as long as a wrong password.
@functools.cache
def _dummy_hash() -> str:
    # Made on the first login, not at import: scrypt's ~50 ms would slow every command and server start.
    return hash_password("not a password", salt=b"\0" * 16)


def normalize_username(username: str | None) -> str:
    return (username or "").strip().lower()


def validate_new_user(username: str, password: str, role: str) -> tuple[str, Role]:
    name = normalize_username(username)
    if not USERNAME.match(name):
        raise InvalidInput("username must be 2-40 characters: letters, digits, dot, dash, underscore or @",
                           code="invalid_username")
    validate_password(password)
    return name, parse_role(role)


def validate_password(password: str) -> None:
    if not MIN_PASSWORD_LEN <= len(password or "") <= MAX_PASSWORD_LEN:
        raise InvalidInput(f"password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters",
                           code="invalid_password")


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput("role must be admin or viewer", code="invalid_role") from None


# --- throttle -------------------------------------------------------------------------------------

def _wait(window: timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    return f"{minutes // 60} hours" if minutes >= 120 else f"{minutes} minute{'s' if minutes > 1 else ''}"


async def throttle_message(attempts: LoginAttempts, *, name: str, address: str, now: datetime) -> str | None:
    """Why a login is refused before its password is even checked, or None. The attempt being judged is
    already recorded as a failure, hence the `- 1`."""
    for window, limit in (*PAIR_TIERS, ADDRESS_TIER):
        per_address_only = (window, limit) == ADDRESS_TIER
        failures = await attempts.failures(since=now - window, username=None if per_address_only else name,
                                           address=address) - 1
        if failures >= limit:
            return f"too many failed logins; wait {_wait(window)} and try again"
    return None


# --- use cases -------------------------------------------------------------------------------------

async def create_admin_user(username: str, password: str, role: str = "admin", *, users: AdminUserStore,
                            now: datetime, actor: str) -> AdminUser:
    name, parsed_role = validate_new_user(username, password, role)
    if await users.get(name) is not None:
        raise Conflict(f"dashboard user {name!r} exists", code="admin_exists")
    user = AdminUser(id=None, username=name, password_hash=hash_password(password), role=parsed_role,
                     created_at=now)
    return await users.add(user, actor=actor)


async def _change_user(username: str, values: dict, *, users: AdminUserStore, end_sessions: bool, actor: str,
                       action: str, now: datetime) -> str:
    name = normalize_username(username)
    if not await users.change(name, values, end_sessions=end_sessions, actor=actor, action=action, at=now):
        raise NotFound(f"no dashboard user {name!r}", code="admin_not_found")
    return name


async def change_password(username: str, password: str, *, users: AdminUserStore, now: datetime, actor: str) -> str:
    """A new password ends every session opened with the old one."""
    validate_password(password)
    return await _change_user(username, {"password_hash": hash_password(password)}, users=users, end_sessions=True,
                              actor=actor, action="set_admin_password", now=now)


async def change_role(username: str, role: str, *, users: AdminUserStore, now: datetime, actor: str) -> str:
    """Roles are read on every request, so open sessions get the new role at their next click."""
    return await _change_user(username, {"role": parse_role(role).value}, users=users, end_sessions=False,
                              actor=actor, action="set_admin_role", now=now)


async def disable_user(username: str, *, users: AdminUserStore, now: datetime, actor: str) -> str:
    """No more logins, and every open session ends (`admin password` does not re-enable)."""
    return await _change_user(username, {"active": False}, users=users, end_sessions=True, actor=actor,
                              action="disable_admin_user", now=now)


async def _verify_inline(password: str, encoded: str) -> bool:
    return verify_password(password, encoded)


async def authenticate(username: str, password: str, *, address: str, users: AdminUserStore,
                       attempts: LoginAttempts, now: datetime, verify=_verify_inline) -> AdminUser:
    """Check throttle, then the password. `verify` is injectable so a caller can run scrypt off its
    event loop. Raises Throttled or BadCredentials; every attempt is recorded."""
    name = normalize_username(username)[:80]
    # Recorded as a failure before counting, so guesses sent at the same moment each count the others
    # (a success below, at the same instant, still resets the count). A guesser who keeps trying
    # stays locked out from where they are; a person who waits, or is elsewhere, gets in.
    attempt_id = await attempts.record(at=now, username=name, address=address, success=False)
    refused = await throttle_message(attempts, name=name, address=address, now=now)
    if refused:
        if await attempts.failures(since=now - ADDRESS_TIER[0], address=address) > MAX_KEPT_FAILURES_PER_ADDRESS:
            await attempts.forget(attempt_id)  # a flood: enough of it is on record to keep the throttle shut
        raise Throttled(refused)
    user = await users.get(name) if name else None
    ok = await verify(password or "", user.password_hash if user else _dummy_hash())
    if not (ok and user and user.active):
        raise BadCredentials("wrong username or password")
    await attempts.record(at=now, username=name, address=address, success=True)
    await users.touch_login(name, now)
    return user
