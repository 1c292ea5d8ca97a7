"""The scale-out deployment without a Docker engine: compose.yaml parses, runs only real `lipameter`
commands, migrates once before anything serves; the Dockerfile copies what exists; migrations started
by several replicas at once on PostgreSQL end at head without errors (the advisory lock)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from web.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
LIPAMETER = str(Path(sys.executable).parent / "lipameter")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_services_run_real_lipameter_commands(compose):
    services = compose["services"]
    assert {"postgres", "migrate", "web", "worker", "caddy"} <= set(services)
    for name in ("migrate", "web", "worker"):
        command = services[name]["command"]
        assert command[0] == "lipameter"
        build_parser().parse_args(command[1:])  # exits (SystemExit) on an unknown command or option
    assert services["web"]["deploy"]["replicas"] == 2 and services["worker"]["deploy"]["replicas"] == 2
    assert "--no-worker" in services["web"]["command"]  # jobs run in the worker service only


def test_compose_migrates_once_before_serving_and_checks_health(compose):
    services = compose["services"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["stop_signal"] == "SIGTERM" and services[name]["environment"]["TRUSTED_PROXIES"]
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["caddy"]["depends_on"]["web"]["condition"] == "service_healthy"
    caddyfile = ROOT / services["caddy"]["volumes"][0].split(":")[0]
    assert "reverse_proxy" in caddyfile.read_text() and "web 8000" in caddyfile.read_text()


def test_dockerfile_copies_existing_packages_and_its_command_parses():
    text = (ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (\S+)", text, flags=re.M)
    for source in copied:
        assert (ROOT / source).exists(), source
    # Every package `pip install .` installs (a room added later, such as whatsapp/, was once left out: the
    # image's `lipameter` would not have imported).
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    rooms = {name for name in find["include"] if "." not in name}
    assert rooms and rooms <= set(copied), rooms - set(copied)
    command = re.search(r'^CMD \["sh", "-c", "(.*)"\]', text, flags=re.M).group(1)
    for part in command.split("&&"):
        words = part.split()
        assert words[0] == "lipameter"
        build_parser().parse_args(words[1:])


def test_the_entry_commands_run():
    for args in (["--help"], ["serve", "--help"], ["worker", "--help"], ["migrate", "--help"]):
        done = subprocess.run([LIPAMETER, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert "--workers" in subprocess.run([LIPAMETER, "serve", "--help"], capture_output=True, text=True).stdout


def test_serve_refuses_zero_workers():
    done = subprocess.run([LIPAMETER, "serve", "--workers", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--workers" in done.stderr


def test_replicas_migrating_together_end_at_head(request):
    url = request.getfixturevalue("pg_url").rsplit("/", 1)[0] + "/postgres"
    import asyncio
    import uuid

    from tests.conftest import _pg_exec

    name = f"lipameter_migrate_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_exec(url, f'CREATE DATABASE "{name}"'))
    target = url.rsplit("/", 1)[0] + "/" + name
    try:
        env = {**os.environ, "DATABASE_URL": target}
        runs = [subprocess.Popen([LIPAMETER, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(3)]
        results = [(run.wait(120), run.stderr.read()) for run in runs]
        assert all(code == 0 for code, _ in results), results
        from tests.stack import run_sql

        assert [r[0] for r in run_sql(target, "SELECT version_num FROM alembic_version")] == \
            [r[0] for r in run_sql(request.getfixturevalue("pg_url"), "SELECT version_num FROM alembic_version")]
    finally:
        asyncio.run(_pg_exec(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
