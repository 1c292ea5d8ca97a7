"""Prometheus metrics, one registry per app so that tests can build many apps in one process."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from core.audit.checks import VIOLATION_CHECKS, AuditReport
from core.audit.facts import Facts


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.payments_started = Counter("lipameter_payments_started_total", "STK pushes requested",
                                        ["channel"], registry=self.registry)
        self.callbacks = Counter("lipameter_mpesa_callbacks_total", "Daraja callbacks by outcome",
                                 ["outcome"], registry=self.registry)
        self.sms_reports = Counter("lipameter_sms_delivery_reports_total",
                                   "Africa's Talking SMS delivery reports by status and outcome", ["status", "outcome"],
                                   registry=self.registry)
        self.jobs = Counter("lipameter_jobs_total", "Jobs run by kind and result", ["kind", "result"],
                            registry=self.registry)
        self.jobs_waiting = Gauge("lipameter_jobs_waiting", "Jobs queued or running by kind", ["kind"],
                                  registry=self.registry)
        # From the periodic audit (AUDIT_EVERY_S): the books' invariants and the queues' health.
        self.audit_violations = Gauge("lipameter_audit_violations", "Invariant violations found by the last audit",
                                      ["check"], registry=self.registry)
        self.audit_last_run = Gauge("lipameter_audit_last_run_timestamp_seconds", "When the last audit ran",
                                    registry=self.registry)
        self.reviews_open = Gauge("lipameter_reviews_open", "Payments and top-ups waiting for a person", ["kind"],
                                  registry=self.registry)
        self.oldest_topup = Gauge("lipameter_topup_oldest_waiting_seconds",
                                  "Age of the oldest top-up not yet applied (queued or sending)", registry=self.registry)
        self.queue_depth = Gauge("lipameter_jobs_queue_depth", "Jobs queued or running", registry=self.registry)
        self.oldest_job = Gauge("lipameter_jobs_oldest_waiting_seconds",
                                "How long the oldest due job has waited to run", registry=self.registry)
        self.callbacks_waiting = Gauge("lipameter_callbacks_waiting",
                                       "Callbacks kept and not applied yet (the inbox a worker drains)",
                                       registry=self.registry)
        self._job_kinds: set[str] = set()

    def export_audit(self, report: AuditReport, facts: Facts, *, at: datetime) -> None:
        by_check = dict.fromkeys(VIOLATION_CHECKS, 0)
        for finding in report.violations:
            by_check[finding.check] = by_check.get(finding.check, 0) + 1
        for check, count in by_check.items():
            self.audit_violations.labels(check=check).set(count)
        self.reviews_open.labels(kind="payment").set(facts.payments_in_review)
        self.reviews_open.labels(kind="topup").set(facts.topups_in_review)
        self.oldest_topup.set(facts.oldest_waiting_topup_s)
        self.queue_depth.set(sum(facts.jobs_waiting.values()))
        self.oldest_job.set(facts.oldest_job_age_s)
        self.callbacks_waiting.set(len(facts.callbacks_without_outcome))
        self._job_kinds |= set(facts.jobs_waiting)
        for kind in self._job_kinds:  # a kind that drained reads 0, not its last value
            self.jobs_waiting.labels(kind=kind).set(facts.jobs_waiting.get(kind, 0))
        self.audit_last_run.set(at.timestamp())
