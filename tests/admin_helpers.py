"""Shared by the dashboard tests: a Stack with a SECRET_KEY, dashboard users, and an HTTP client that
logs in and posts forms the way a browser does (cookie jar, CSRF field read from the page)."""

from __future__ import annotations

import re
import shutil
import time
from typing import Any

import httpx
import pytest

from core.admin.auth import create_admin_user
from tests.stack import Stack, with_container

SECRET = "dashboard-test-secret-0123456789abcdef"
# TRUSTED_PROXIES: the tests play clients at other addresses with X-Forwarded-For.
FAST = dict(topup_backoff_s="0.3,0.3,0.5", topup_max_attempts=6, tuya_timeout_s=1.0, secret_key=SECRET,
            trusted_proxies="127.0.0.1/32")
PASSWORDS = {"boss": "boss-password-123", "watcher": "watcher-password-123"}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def start_stack(database_url: str) -> Stack:
    stack = Stack(database_url, **FAST)
    add_user(database_url, "boss", "admin")
    add_user(database_url, "watcher", "viewer")
    return stack


def module_database(request, tmp_path_factory, sqlite_template) -> str:
    """A migrated database for one test module (one Stack serves the whole module)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("dashboard") / "dashboard.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    from tests.conftest import _truncate_pg

    url = request.getfixturevalue("pg_url")
    _truncate_pg(url)
    return url


def add_user(database_url: str, username: str, role: str, password: str | None = None) -> None:
    with_container(database_url, lambda c: create_admin_user(
        username, password or PASSWORDS[username], role, users=c.admin_users, now=c.clock.now(), actor="test"))


class Browser(httpx.Client):
    """A cookie-keeping client that reads each page's CSRF token, like a browser filling a form."""

    def __init__(self, stack: Stack, **kw: Any) -> None:
        super().__init__(base_url=stack.url, timeout=20, follow_redirects=False, **kw)
        self.token: str | None = None

    def page(self, path: str, **kw: Any) -> httpx.Response:
        answer = self.get(path, **kw)
        if found := CSRF.search(answer.text):
            self.token = found.group(1)
        return answer

    def login(self, username: str, password: str | None = None) -> httpx.Response:
        self.page("/admin/login")
        return self.form("/admin/login", username=username, password=password or PASSWORDS[username])

    def form(self, path: str, *, csrf: bool = True, **fields: Any) -> httpx.Response:
        data = {**({"csrf": self.token} if csrf and self.token else {}), **fields}
        answer = self.post(path, data=data)
        if found := CSRF.search(answer.text):
            self.token = found.group(1)
        return answer


def logged_in(stack: Stack, username: str) -> Browser:
    client = Browser(stack)
    answer = client.login(username)
    assert answer.status_code == 303, answer.text
    client.page("/admin")
    return client


def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def failed_payment(stack: Stack, amount: int = 600) -> str:
    """A completed payment whose top-up failed permanently (Tuya 1106): nothing reached the meter."""
    stack.tuya.set_fault("dev-a101", "throttle", n=1, code=1106)
    answer = stack.pay(amount=amount)
    assert answer.status_code == 200, answer.text
    ref = answer.json()["paymentId"]
    stack.wait_for(ref, lambda p: p["topUpStatus"] == "FAILED", timeout=20)
    return ref


def count(stack: Stack, table: str, where: str = "1=1", **params: Any) -> int:
    return stack.sql(f"SELECT count(*) AS n FROM {table} WHERE {where}", **params)[0].n


# The dashboard's test stack on each engine, and a logged-in admin ("boss") and viewer ("watcher"); test
# modules import them as fixtures.
@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(request, tmp_path_factory, sqlite_template):
    stack = start_stack(module_database(request, tmp_path_factory, sqlite_template))
    yield stack
    stack.stop()


@pytest.fixture
def boss(stack):
    client = logged_in(stack, "boss")
    yield client
    client.close()


@pytest.fixture
def watcher(stack):
    client = logged_in(stack, "watcher")
    yield client
    client.close()
