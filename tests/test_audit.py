"""`lipameter audit`: the books' invariants, as rules on hand-made facts and against real databases."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal

import pytest

from core.audit.checks import audit
from core.audit.facts import Facts, MeterMoney, TopUpInFlight
from tests.cli_helpers import lipameter, with_database
from tests.stack import Stack, run_sql
from tests.test_e2e_topups import FAST, pay_and_wait


def test_clean_books_pass_and_open_work_is_information_only():
    facts = Facts(money=[MeterMoney("A101", paid=Decimal(300), credited=Decimal(200), manual=Decimal(50))],
                  in_flight=[TopUpInFlight("t1", "A101", "queued", 12.0)], payments_in_review=1)
    report = audit(facts)
    assert report.ok
    assert {f.check for f in report.findings} == {"topup_in_flight", "in_review"}
    assert report.totals.manual == Decimal(50)


@pytest.mark.parametrize("facts, check", [
    (Facts(money=[MeterMoney("A101", paid=Decimal(100), credited=Decimal("100.01"))]), "credited_le_paid"),
    (Facts(completed_without_topup=["p1"]), "one_topup_per_payment"),
    (Facts(payments_with_many_topups=[("p1", 2)]), "one_topup_per_payment"),
    (Facts(failed_without_reason=["t1"]), "failed_has_reason"),
    (Facts(receipts_used_twice=[("QK1", 2)]), "receipt_used_once"),
    (Facts(callbacks_without_outcome=[(7, 600.0)]), "callback_has_outcome"),
    (Facts(jobs_past_lease=[(3, "topup", 900.0)]), "job_within_lease"),
    (Facts(shared_devices=[("dev-1", ["A1", "A2"])]), "one_meter_per_device"),
])
def test_each_violation_is_found(facts, check):
    report = audit(facts)
    assert not report.ok
    assert next(f.check for f in report.violations) == check


def test_work_within_its_grace_is_not_a_violation():
    assert audit(Facts(callbacks_without_outcome=[(7, 5.0)], jobs_past_lease=[(3, "topup", 10.0)])).ok


def run_audit(database_url: str, *args: str) -> subprocess.CompletedProcess:
    return lipameter("audit", *args, env=with_database(database_url))


def test_audit_of_real_books_then_of_broken_ones(database_url):
    stack = Stack(database_url, **FAST)
    try:
        paid = pay_and_wait(stack, amount=200)
        assert paid["topUpStatus"] == "APPLIED"
    finally:
        stack.stop()
    clean = run_audit(database_url, "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = json.loads(clean.stdout)
    assert report["ok"], report
    assert Decimal(report["totals"]["paid"]) == Decimal(report["totals"]["credited"]) == Decimal(200)

    # Break the books the ways the invariants forbid (two active meters on one device the schema itself now
    # refuses): an over-credit, then a top-up failed without a reason.
    run_sql(database_url, "UPDATE topups SET amount = 250")
    broken = run_audit(database_url)
    assert broken.returncode == 1, broken.stdout
    assert "credited_le_paid" in broken.stdout and broken.stdout.splitlines()[0].startswith("audit 2 violation")
    run_sql(database_url, "UPDATE topups SET amount = 200, status = 'failed', last_error = NULL, reason = NULL")
    failed = run_audit(database_url, "--json")
    assert failed.returncode == 1
    assert [f["check"] for f in json.loads(failed.stdout)["findings"] if f["severity"] == "violation"] == [
        "failed_has_reason"]
