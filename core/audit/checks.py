"""The books' invariants, checked by `lipameter audit` and periodically by the worker.

Each rule turns facts into findings. A `violation` means money may be wrong (exit status 1, the landlord is
told); `info` is what a person should know but is not wrong (a top-up still in flight, an open review).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from core.audit.facts import Facts

VIOLATION = "violation"
INFO = "info"

# A callback is stored before it is applied, in its own transaction; one still without an outcome after
# this long was interrupted mid-way. Jobs get the same grace past their lease (a worker renews late).
CALLBACK_GRACE_S = 120.0
LEASE_GRACE_S = 60.0

# Every check that can find a violation (the metric `lipameter_audit_violations` reads 0 for each clean one).
VIOLATION_CHECKS = ("credited_le_paid", "one_topup_per_payment", "failed_has_reason", "receipt_used_once",
                    "callback_has_outcome", "job_within_lease", "one_meter_per_device")


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    subject: str
    detail: str

    def as_dict(self) -> dict:
        return {"check": self.check, "severity": self.severity, "subject": self.subject, "detail": self.detail}


@dataclass(frozen=True)
class Totals:
    paid: Decimal
    credited: Decimal
    manual: Decimal


@dataclass(frozen=True)
class AuditReport:
    totals: Totals
    findings: list[Finding] = field(default_factory=list)

    @property
    def violations(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == VIOLATION]

    @property
    def ok(self) -> bool:
        return not self.violations


def audit(facts: Facts) -> AuditReport:
    findings = [
        *_credited_within_paid(facts),
        *_every_completed_payment_has_one_topup(facts),
        *_failures_have_reasons(facts),
        *_receipts_once(facts),
        *_callbacks_have_outcomes(facts),
        *_jobs_within_lease(facts),
        *_one_meter_per_device(facts),
        *_open_work(facts),
    ]
    totals = Totals(paid=sum((m.paid for m in facts.money), Decimal(0)),
                    credited=sum((m.credited for m in facts.money), Decimal(0)),
                    manual=sum((m.manual for m in facts.money), Decimal(0)))
    if totals.credited > totals.paid:
        findings.insert(0, Finding("credited_le_paid", VIOLATION, "total",
                                   f"credited {totals.credited} > paid {totals.paid}"))
    return AuditReport(totals=totals, findings=findings)


def _credited_within_paid(facts: Facts) -> list[Finding]:
    return [Finding("credited_le_paid", VIOLATION, f"meter {m.meter_number}", f"credited {m.credited} > paid {m.paid}")
            for m in facts.money if m.credited > m.paid]


def _every_completed_payment_has_one_topup(facts: Facts) -> list[Finding]:
    missing = [Finding("one_topup_per_payment", VIOLATION, f"payment {pid}", "completed but no top-up")
               for pid in facts.completed_without_topup]
    many = [Finding("one_topup_per_payment", VIOLATION, f"payment {pid}", f"{count} top-ups")
            for pid, count in facts.payments_with_many_topups]
    return missing + many


def _failures_have_reasons(facts: Facts) -> list[Finding]:
    return [Finding("failed_has_reason", VIOLATION, f"top-up {tid}", "failed without a reason")
            for tid in facts.failed_without_reason]


def _receipts_once(facts: Facts) -> list[Finding]:
    return [Finding("receipt_used_once", VIOLATION, f"receipt {receipt}", f"on {count} payments")
            for receipt, count in facts.receipts_used_twice]


def _callbacks_have_outcomes(facts: Facts) -> list[Finding]:
    return [Finding("callback_has_outcome", VIOLATION, f"callback {cid}", f"no outcome after {age:.0f} s")
            for cid, age in facts.callbacks_without_outcome if age > CALLBACK_GRACE_S]


def _jobs_within_lease(facts: Facts) -> list[Finding]:
    return [Finding("job_within_lease", VIOLATION, f"job {jid} ({kind})", f"{overdue:.0f} s past its lease")
            for jid, kind, overdue in facts.jobs_past_lease if overdue > LEASE_GRACE_S]


def _one_meter_per_device(facts: Facts) -> list[Finding]:
    return [Finding("one_meter_per_device", VIOLATION, f"device {device}", "active meters " + ", ".join(numbers))
            for device, numbers in facts.shared_devices]


def _open_work(facts: Facts) -> list[Finding]:
    findings = [Finding("topup_in_flight", INFO, f"top-up {t.topup_id}", f"meter {t.meter_number} {t.status} "
                        f"for {t.age_s:.0f} s") for t in facts.in_flight]
    if facts.payments_in_review or facts.topups_in_review:
        findings.append(Finding("in_review", INFO, "reviews", f"{facts.payments_in_review} payment(s), "
                                f"{facts.topups_in_review} top-up(s) wait for a person"))
    return findings


def summary_line(report: AuditReport) -> str:
    """One line for a log, a metric label or the landlord's SMS."""
    state = "ok" if report.ok else f"{len(report.violations)} violation(s)"
    return (f"audit {state}: paid KES {report.totals.paid}, credited KES {report.totals.credited}, "
            f"manual KES {report.totals.manual}")
