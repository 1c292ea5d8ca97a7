"""`lipameter backup` and `restore`: a backup taken while payments flow restores to books that pass the audit."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import uuid

from storage.db import is_sqlite
from tests import cli_helpers
from tests.conftest import PG_ADMIN_URL, _pg_exec
from tests.stack import Stack, run_sql
from tests.test_e2e_topups import FAST

PHONES = [f"07{n:08d}" for n in range(12345600, 12345608)]


def lipameter(database_url: str, *args: str) -> subprocess.CompletedProcess:
    return cli_helpers.lipameter(*args, env=cli_helpers.with_database(database_url))


def pay_many(stack: Stack, started: threading.Event) -> None:
    for phone in PHONES:
        answer = stack.pay(amount=50, phone=phone)
        assert answer.status_code == 200, answer.text
        started.set()


def fresh_target(database_url: str, tmp_path) -> str:
    if is_sqlite(database_url):
        return f"sqlite+aiosqlite:///{tmp_path}/restored.db"
    name = f"lipameter_restore_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def test_backup_under_load_restores_to_books_that_pass_the_audit(database_url, tmp_path):
    stack = Stack(database_url, **FAST)
    started, file = threading.Event(), tmp_path / "books.backup"
    payer = threading.Thread(target=pay_many, args=(stack, started))
    try:
        payer.start()
        assert started.wait(30)
        taken = lipameter(database_url, "backup", "--to", str(file))
        assert taken.returncode == 0, taken.stderr
        payer.join(60)
    finally:
        stack.stop()
    assert lipameter(database_url, "backup", "--to", str(file)).returncode == 2  # never overwritten silently

    target = fresh_target(database_url, tmp_path)
    try:
        assert lipameter(target, "restore", "--from", str(file)).returncode == 2  # needs --yes
        restored = lipameter(target, "restore", "--from", str(file), "--yes")
        assert restored.returncode == 0, restored.stderr
        audited = lipameter(target, "audit")
        assert audited.returncode == 0, audited.stdout + audited.stderr
        count = run_sql(target, "SELECT count(*) n FROM payments")[0].n
        assert 1 <= count <= len(PHONES)
    finally:
        if not is_sqlite(target):
            asyncio.run(_pg_exec(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{target.rsplit("/", 1)[1]}" WITH (FORCE)'))


def test_restore_of_a_missing_file_is_one_clear_line(sqlite_template, tmp_path):
    answer = lipameter(f"sqlite+aiosqlite:///{sqlite_template}", "restore", "--from", str(tmp_path / "nope"), "--yes")
    assert answer.returncode == 1 and "no such backup file" in answer.stderr and "Traceback" not in answer.stderr
