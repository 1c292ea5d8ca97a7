"""The command line as an operator uses it: real subprocesses, a real database."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def lipameter(*args: str, database_url: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DARAJA_", "API_KEYS", "CALLBACK_", "PUBLIC_"))}
    environment.update(DATABASE_URL=database_url, **(env or {}))
    return subprocess.run([sys.executable, "-m", "web.cli", *args], capture_output=True, text=True,
                          env=environment, timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_meter_and_tenant_commands(database_url):
    added = lipameter("meter", "add", "--number", "C9", "--name", "Flat C9", "--device-id", "dev-c9",
                      "--price", "25.50", database_url=database_url)
    assert added.returncode == 0, added.stderr
    meter_id = added.stdout.strip().splitlines()[-1]
    assert len(meter_id) == 36
    listed = lipameter("meter", "list", database_url=database_url)
    assert "C9" in listed.stdout and meter_id in listed.stdout and "25.50" in listed.stdout
    tenant = lipameter("tenant", "add", "--phone", "0712345678", "--name", "Achieng", "--meter", "C9",
                       database_url=database_url)
    assert tenant.returncode == 0, tenant.stderr


@pytest.mark.parametrize("args,message", [
    (["meter", "add", "--number", "THIS-IS-TOO-LONG", "--name", "x", "--device-id", "d"], "1-12"),
    (["meter", "add", "--number", "Z1", "--name", "x", "--device-id", "d", "--price", "0"], "more than 0"),
    (["meter", "add", "--number", "Z1", "--name", "x", "--device-id", "d", "--price", "abc"], "price must be"),
    (["tenant", "add", "--phone", "0712"], "Kenyan mobile"),
    (["tenant", "add", "--phone", "0712345678", "--meter", "NOPE"], "no meter"),
])
def test_user_mistakes_are_one_line_and_exit_2(database_url, args, message):
    result = lipameter(*args, database_url=database_url)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_duplicate_meter_number_refused(database_url):
    args = ["meter", "add", "--number", "D1", "--name", "x", "--device-id", "d"]
    assert lipameter(*args, database_url=database_url).returncode == 0
    again = lipameter(*args, database_url=database_url)
    assert again.returncode == 2 and "taken" in again.stderr


def test_serve_names_what_is_missing(tmp_path):
    result = lipameter("serve", database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db", env={"API_KEYS": "k"})
    assert result.returncode == 2
    for name in ("PUBLIC_BASE_URL", "CALLBACK_TOKEN", "DARAJA_CONSUMER_KEY", "DARAJA_PASSKEY"):
        assert name in result.stderr
    assert "API_KEYS" not in result.stderr


def test_migrate_creates_the_schema(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
    result = lipameter("migrate", database_url=url)
    assert result.returncode == 0 and "up to date" in result.stdout
    assert lipameter("meter", "list", database_url=url).returncode == 0
