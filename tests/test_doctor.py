"""`lipameter doctor` as an operator runs it (in the test process, tests/cli_helpers.py), against the
sandboxes over real HTTP (Daraja, Tuya, Africa's Talking, Telegram), a real database and the app's own worker."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.cli_helpers import lipameter
from tests.stack import Stack, settings_env

LIVE_LIKE = dict(public_base_url="https://pay.lipameter.example", callback_allowed_ips="127.0.0.1",
                 ussd_allowed_ips="127.0.0.1")


def doctor(stack: Stack, **env) -> subprocess.CompletedProcess:
    return lipameter("doctor", env=settings_env(stack.settings, **env))


def lines(result: subprocess.CompletedProcess) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        _level, _, rest = line.partition("  ")
        found.setdefault(rest.split(":")[0].strip(), []).append(line)
    return found


def wait_for_heartbeat(stack: Stack, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not stack.sql("SELECT worker_id FROM worker_heartbeats"):
        assert time.monotonic() < deadline, "the worker never wrote a heartbeat"
        time.sleep(0.1)


@pytest.fixture
def healthy(database_url):
    stack = Stack(database_url, telegram=True, **LIVE_LIKE)
    wait_for_heartbeat(stack)
    yield stack
    stack.stop()


def test_healthy_sandboxes_pass(healthy):
    result = doctor(healthy)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert not [line for line in out.splitlines() if line.startswith("FAIL")], out
    for expected in ("ok    database: reachable, migrated", "ok    daraja oauth: token obtained",
                     "ok    tuya token: obtained", "ok    meter A101: device dev-a101 online",
                     "ok    meter B201", "ok    tuya cloud:", "ok    sms: Africa's Talking credentials valid, balance KES",
                     "ok    telegram: bot @", "ok    telegram webhook: set", "ok    worker: alive",
                     "ok    allowlist: CALLBACK_ALLOWED_IPS set"):
        assert expected in out, out
    assert "warn  daraja environment: a stand-in" in out  # named: not Safaricom
    for secret in ("tuya-test-secret", "at-test-key", "cs-test", "test-callback-token", "sandbox-test-token"):
        assert secret not in out + result.stderr


def test_misconfigured_services_each_fail_with_what_to_do(healthy):
    healthy.tuya.set_project_fault("error", code=28841002)  # the cloud plan expired
    healthy.telegram.webhook["last_error_message"] = "Wrong response from the webhook: 502 Bad Gateway"
    healthy.telegram.webhook["last_error_date"] = int(time.time())
    result = doctor(healthy, public_base_url="http://127.0.0.1:9", daraja_consumer_secret="wrong",
                    at_api_key="wrong-key", daraja_shortcode="17x", callback_allowed_ips="", ussd_allowed_ips="")
    assert result.returncode == 1, result.stdout + result.stderr
    found = lines(result)
    assert found["daraja oauth"][0].startswith("FAIL") and "DARAJA_CONSUMER_KEY" in found["daraja oauth"][0]
    assert found["daraja shortcode"][0].startswith("FAIL")
    assert found["callback url"][0].startswith("FAIL") and "HTTPS" in found["callback url"][0]
    assert found["meter A101"][0].startswith("FAIL") and "plan has expired" in found["meter A101"][0]
    assert "tuya cloud" not in found
    assert found["sms"][0].startswith("FAIL") and "AT_API_KEY" in found["sms"][0]
    assert "502 Bad Gateway" in found["telegram webhook"][0] and found["telegram webhook"][0].startswith("warn")
    assert all(line.startswith("warn") for line in found["allowlist"])
    assert "failed" in result.stderr  # the summary on exit


def test_wrong_tuya_keys_clock_skew_no_worker_and_unmigrated_database(database_url, tmp_path):
    stack = Stack(database_url, run_worker=False, **LIVE_LIKE)
    try:
        result = doctor(stack, tuya_access_secret="not-the-secret")
        found = lines(result)
        assert result.returncode == 1
        assert found["tuya token"][0].startswith("FAIL") and "TUYA_ACCESS_SECRET" in found["tuya token"][0]
        assert found["worker"][0].startswith("FAIL") and "lipameter worker" in found["worker"][0]
        stack.tuya.set_project_fault("clock_skew", seconds=1200)
        skewed = lines(doctor(stack))
        assert "clock" in skewed["tuya token"][0] and "NTP" in skewed["tuya token"][0]
        empty = lines(doctor(stack, database_url=f"sqlite+aiosqlite:///{tmp_path}/empty.db"))
        assert empty["database"][0].startswith("FAIL") and "lipameter migrate" in empty["database"][0]
    finally:
        stack.stop()
