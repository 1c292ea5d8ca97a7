"""`lipameter meter threshold NUMBER VALUE` as an operator uses it."""

from __future__ import annotations

from tests.test_cli import add_c9, lipameter, sqlite_url, tuya, tuya_env  # noqa: F401  (fixtures)


def test_meter_threshold(sqlite_url):
    add_c9(sqlite_url)
    done = lipameter("meter", "threshold", "C9", "75.50", "--by", "amina", database_url=sqlite_url)
    assert done.returncode == 0, done.stderr
    assert "meter C9: low-balance threshold 75.50" in done.stdout
    for bad in ("-3", "abc", "1e9", "0.001", "NaN", "\u0661"):
        refused = lipameter("meter", "threshold", "C9", bad, database_url=sqlite_url)
        assert refused.returncode != 0 and "threshold" in refused.stderr, (bad, refused.stderr)
    missing = lipameter("meter", "threshold", "NOPE", "10", database_url=sqlite_url)
    assert missing.returncode != 0 and "no meter" in missing.stderr
    auto = lipameter("meter", "threshold", "C9", "auto", database_url=sqlite_url)
    assert auto.returncode == 0 and "auto" in auto.stdout
