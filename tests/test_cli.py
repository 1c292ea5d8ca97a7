"""The command line as an operator uses it, against a real database: commands run in the test process
(tests/cli_helpers.py), and as real processes where the process is what is tested (the installed script,
`serve` refusing to start)."""

from __future__ import annotations

import os
import subprocess

import pytest

from sandbox.tuya import create_tuya_sandbox
from tests import cli_helpers
from tests.servers import ServerThread

TUYA_ID, TUYA_SECRET = "cli-tuya-id", "cli-tuya-secret"


@pytest.fixture(scope="module")
def tuya():
    app = create_tuya_sandbox(access_id=TUYA_ID, access_secret=TUYA_SECRET)
    server = ServerThread(app).start()
    sandbox = app.state.tuya
    sandbox.add_device("dev-c9", "seed", balance="50", price="25")
    sandbox.add_device("dev-std", "tuya-standard", balance="5")
    yield server.url, sandbox
    server.stop()


@pytest.fixture(autouse=True)
def tuya_env(tuya, monkeypatch):
    monkeypatch.setenv("TUYA_ENDPOINT", tuya[0])
    monkeypatch.setenv("TUYA_ACCESS_ID", TUYA_ID)
    monkeypatch.setenv("TUYA_ACCESS_SECRET", TUYA_SECRET)


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template):
    """Most CLI tests are about the command line, not the engine: SQLite is enough (the storage and
    end-to-end tests cover PostgreSQL); test_meter_and_tenant_commands runs on both."""
    import shutil

    shutil.copy(sqlite_template, tmp_path / "cli.db")
    return f"sqlite+aiosqlite:///{tmp_path}/cli.db"


def operator_env(database_url: str, env: dict | None = None) -> dict[str, str]:
    """The operator's shell: this database, the Tuya sandbox, none of the developer's own service settings."""
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("DARAJA_", "API_KEYS", "CALLBACK_", "PUBLIC_", "AT_"))}
    environment.update(DATABASE_URL=database_url, **(env or {}))
    return environment


def lipameter(*args: str, database_url: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return cli_helpers.lipameter(*args, env=operator_env(database_url, env))


def lipameter_process(*args: str, database_url: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return cli_helpers.lipameter_process(*args, env=operator_env(database_url, env))


def add_c9(database_url):
    added = lipameter("meter", "add", "--number", "C9", "--name", "Flat C9", "--device-id", "dev-c9",
                      "--price", "25.50", database_url=database_url)
    assert added.returncode == 0, added.stderr
    return added


def test_meter_and_tenant_commands(database_url):
    added = add_c9(database_url)
    meter_id = added.stdout.strip().splitlines()[-1]
    assert len(meter_id) == 36
    assert "charge_money" in added.stdout and "online" in added.stdout
    listed = lipameter("meter", "list", database_url=database_url)
    assert "C9" in listed.stdout and meter_id in listed.stdout and "25.50" in listed.stdout
    tenant = lipameter("tenant", "add", "--phone", "0712345678", "--name", "Achieng", "--meter", "C9",
                       database_url=database_url)
    assert tenant.returncode == 0, tenant.stderr


@pytest.mark.parametrize("args,message,run", [
    # The first as the installed script in its own process: a broken entry point fails here.
    (["meter", "add", "--number", "THIS-IS-TOO-LONG", "--name", "x", "--device-id", "d"], "1-12", lipameter_process),
    (["meter", "add", "--number", "Z1", "--name", "x", "--device-id", "d", "--price", "0"], "more than 0", lipameter),
    (["meter", "add", "--number", "Z1", "--name", "x", "--device-id", "d", "--price", "abc"], "price must be",
     lipameter),
    (["tenant", "add", "--phone", "0712"], "Kenyan mobile", lipameter),
    (["tenant", "add", "--phone", "0712345678", "--meter", "NOPE"], "no meter", lipameter),
])
def test_user_mistakes_are_one_line_and_exit_2(sqlite_url, args, message, run):
    result = run(*args, database_url=sqlite_url)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_device_without_the_profile_codes_is_refused(sqlite_url):
    result = lipameter("meter", "add", "--number", "S1", "--name", "x", "--device-id", "dev-std", "--profile", "seed",
                       database_url=sqlite_url)
    assert result.returncode == 2 and "charge_money" in result.stderr and "electric_total" in result.stderr
    unknown = lipameter("meter", "add", "--number", "S1", "--name", "x", "--device-id", "nope", database_url=sqlite_url)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "S1" not in lipameter("meter", "list", database_url=sqlite_url).stdout


def test_duplicate_meter_number_refused(sqlite_url):
    args = ["meter", "add", "--number", "D1", "--name", "x", "--device-id", "dev-c9"]
    assert lipameter(*args, database_url=sqlite_url).returncode == 0
    again = lipameter(*args, database_url=sqlite_url)
    assert again.returncode == 2 and "taken" in again.stderr
    twin = lipameter("meter", "add", "--number", "D2", "--name", "y", "--device-id", "dev-c9", database_url=sqlite_url)
    assert twin.returncode == 2 and "device dev-c9 is already meter D1" in twin.stderr


def test_serve_names_what_is_missing(tmp_path):
    result = lipameter_process("serve", database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db",
                               env={"API_KEYS": "k", "TUYA_ACCESS_SECRET": ""})
    assert result.returncode == 2
    for name in ("PUBLIC_BASE_URL", "CALLBACK_TOKEN", "DARAJA_CONSUMER_KEY", "DARAJA_PASSKEY", "TUYA_ACCESS_SECRET"):
        assert name in result.stderr
    assert "API_KEYS" not in result.stderr


def test_migrate_creates_the_schema(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
    result = lipameter_process("migrate", database_url=url)  # the installed script, end to end
    assert result.returncode == 0 and "up to date" in result.stdout
    assert lipameter("meter", "list", database_url=url).returncode == 0


def test_operator_commands_credit_read_and_audit(sqlite_url, tuya):
    add_c9(sqlite_url)
    sandbox = tuya[1]
    before = sandbox.total_credits("dev-c9")
    no_reason = lipameter("topup", "--meter", "C9", "--amount", "100", database_url=sqlite_url)
    assert no_reason.returncode == 2
    for bad in ("0", "-5", "abc", "10.001", "99999999"):
        refused = lipameter("topup", "--meter", "C9", "--amount", bad, "--reason", "x", database_url=sqlite_url)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, (bad, refused.stderr)
    unknown = lipameter("topup", "--meter", "NOPE", "--amount", "10", "--reason", "x", database_url=sqlite_url)
    assert unknown.returncode == 2 and "no meter" in unknown.stderr
    assert sandbox.total_credits("dev-c9") == before  # nothing sent for any of those

    done = lipameter("topup", "--meter", "C9", "--amount", "100", "--reason", "meter fault refund", "--by", "amina",
                     database_url=sqlite_url)
    assert done.returncode == 0, done.stderr
    assert "applied" in done.stdout and sandbox.total_credits("dev-c9") == before + 100
    topup_id = done.stdout.split()[2].rstrip(":")
    again = lipameter("topup", "retry", topup_id, "--reason", "forged", database_url=sqlite_url)
    assert again.returncode == 2 and "only a failed top-up" in again.stderr
    assert sandbox.total_credits("dev-c9") == before + 100

    balance = lipameter("meter", "balance", "C9", database_url=sqlite_url)
    assert balance.returncode == 0 and "KES" in balance.stdout
    assert lipameter("meter", "price", "C9", "30", database_url=sqlite_url).returncode == 0
    assert lipameter("meter", "price", "C9", "0", database_url=sqlite_url).returncode == 2
    assert lipameter("meter", "prepayment", "C9", "off", database_url=sqlite_url).returncode == 0
    assert lipameter("meter", "clear", "C9", database_url=sqlite_url).returncode == 2
    assert "nothing waits" in lipameter("review", "list", database_url=sqlite_url).stdout

    from tests.stack import run_sql
    actions = [tuple(r) for r in run_sql(sqlite_url, "SELECT actor, action, target FROM audit_log ORDER BY id")]
    assert actions[1] == ("amina", "manual_topup", "C9")
    assert [a for _, a, _ in actions] == ["add_meter", "manual_topup", "set_price", "prepayment_switch"]
