"""`make chaos`, short: a private PostgreSQL restarted mid-run, two serve replicas and two workers (SIGKILLed),
callbacks dropped, duplicated and shuffled, Tuya faults. Every shilling paid is credited once, or waits for a
person; no request gets a 5xx other than the outage's 503; `lipameter audit` is clean."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.postgres


def test_a_short_storm_loses_nothing_and_credits_nothing_twice():
    if not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) or shutil.which("runuser") is None:
        message = "chaos needs PostgreSQL's server binaries and runuser"
        if os.environ.get("LIPAMETER_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    run = subprocess.run([sys.executable, "-m", "bench.chaos", "--payments", "16", "--meters", "4", "--seconds", "20",
                          "--kills", "2", "--seed", "7"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = [line for line in run.stdout.splitlines() if line.startswith("chaos: payments")]
    assert summary, run.stdout + run.stderr
    line = summary[0]
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "doubles 0," in line and "lost 0," in line and "5xx 0," in line and "audit clean" in line
    assert int(re.search(r"kills (\d+)", line).group(1)) >= 1
    assert int(re.search(r"503 (\d+)", line).group(1)) >= 1  # the restart was felt, and answered 503
