"""The periodic audit (issue 11 §1): the worker runs `lipameter audit`'s checks every AUDIT_EVERY_S,
exports the results as Prometheus gauges (web/metrics.py) and tells the landlord (ADMIN_PHONE) about a
violation or a new review item, at most once an hour (core/audit/alerts.py). A web process that runs no
worker refreshes the gauges itself when scraped, no more often than AUDIT_EVERY_S, and alerts nobody."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from core.audit.alerts import tell_landlord
from core.audit.checks import AuditReport, audit, summary_line
from core.ports import Clock, SmsSender, TelegramSender, UnitOfWork
from storage.integrity import read_facts
from web.metrics import Metrics

log = logging.getLogger("lipameter.audit")


@dataclass
class AuditWatch:
    engine: AsyncEngine
    uow: Callable[[], UnitOfWork]
    clock: Clock
    metrics: Metrics
    every_s: float
    admin_phone: str | None = None  # normalised 2547…; None: nobody is told
    sms: SmsSender | None = None
    telegram: TelegramSender | None = None
    _last_run: datetime | None = field(default=None, init=False)  # any run (the gauges are this fresh)
    _last_alerting_run: datetime | None = field(default=None, init=False)  # a worker's run

    def due(self, *, alert: bool = False) -> bool:
        last = self._last_alerting_run if alert else self._last_run
        return last is None or (self.clock.now() - last).total_seconds() >= self.every_s

    async def run(self, *, alert: bool = True) -> AuditReport:
        now = self.clock.now()
        # Set before reading, so a broken read is retried next period, not on every loop.
        self._last_run = now
        if alert:
            self._last_alerting_run = now
        facts = await read_facts(self.engine, now=now)
        report = audit(facts)
        self.metrics.export_audit(report, facts, at=now)
        if not report.ok:
            log.error("%s: %s", summary_line(report),
                      "; ".join(f"{v.check} {v.subject}: {v.detail}" for v in report.violations[:10]))
        if alert and self.admin_phone:
            await tell_landlord(report, facts.reviews, phone=self.admin_phone, uow=self.uow(), sms=self.sms,
                                telegram=self.telegram, clock=self.clock)
        return report

    async def maybe_run(self, *, alert: bool = True) -> AuditReport | None:
        return await self.run(alert=alert) if self.due(alert=alert) else None
