"""Prometheus metrics, one registry per app so that tests can build many apps in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.payments_started = Counter("lipameter_payments_started_total", "STK pushes requested",
                                        ["channel"], registry=self.registry)
        self.callbacks = Counter("lipameter_mpesa_callbacks_total", "Daraja callbacks by outcome",
                                 ["outcome"], registry=self.registry)
        self.jobs = Counter("lipameter_jobs_total", "Jobs run by kind and result", ["kind", "result"],
                            registry=self.registry)
        self.jobs_waiting = Gauge("lipameter_jobs_waiting", "Jobs queued or running by kind", ["kind"],
                                  registry=self.registry)
