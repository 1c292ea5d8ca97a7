"""In-memory fakes of core's ports, for unit tests of core/ (they record state; nothing is mocked)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.jobs.model import Job
from core.meters.model import Meter
from core.notify.model import SentNotice
from core.payments.model import Payment
from core.ports import DpReport, StkPushAccepted, StkPushRequest, StkQueryResult
from core.shared.errors import Conflict, DeviceOffline, UpstreamError
from core.tenants.model import Tenant
from core.topups.model import ClaimLost, TopUp


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 27, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@dataclass
class FakeStore:
    meters: dict = field(default_factory=dict)
    tenants: dict = field(default_factory=dict)
    links: set = field(default_factory=set)
    payments: dict = field(default_factory=dict)
    callbacks: list = field(default_factory=list)  # dicts
    topups: dict = field(default_factory=dict)
    heartbeats: dict = field(default_factory=dict)  # worker id -> last seen (worker_heartbeats)
    jobs: list = field(default_factory=list)
    notifications: list = field(default_factory=list)
    audit: list = field(default_factory=list)
    readings: list = field(default_factory=list)  # core.usage.model.Reading
    alerts: dict = field(default_factory=dict)  # (tenant_id, meter_id) -> core.usage.model.TenantAlert


class _Repo:
    def __init__(self, data: FakeStore) -> None:
        self.data = data


class FakeMeters(_Repo):
    async def add(self, meter: Meter) -> None:
        if any(m.number == meter.number for m in self.data.meters.values()):
            raise Conflict("meter number taken", code="meter_exists")
        self.data.meters[meter.id] = copy.deepcopy(meter)

    async def get(self, meter_id):
        return copy.deepcopy(self.data.meters.get(meter_id))

    async def get_by_number(self, number):
        return next((copy.deepcopy(m) for m in self.data.meters.values() if m.number == number), None)

    async def list(self):
        return sorted(copy.deepcopy(list(self.data.meters.values())), key=lambda m: m.number)

    async def save(self, meter):
        self.data.meters[meter.id] = copy.deepcopy(meter)


class FakeTenants(_Repo):
    async def add(self, tenant: Tenant) -> None:
        if any(t.phone == tenant.phone for t in self.data.tenants.values()):
            raise Conflict("tenant exists", code="tenant_exists")
        self.data.tenants[tenant.id] = copy.deepcopy(tenant)

    async def get(self, tenant_id):
        return copy.deepcopy(self.data.tenants.get(tenant_id))

    async def get_by_phone(self, phone):
        return next((copy.deepcopy(t) for t in self.data.tenants.values() if t.phone == phone), None)

    async def link(self, tenant_id, meter_id):
        self.data.links.add((tenant_id, meter_id))

    async def save(self, tenant):
        self.data.tenants[tenant.id] = copy.deepcopy(tenant)

    async def linked_to(self, meter_id):
        linked = [self.data.tenants[t] for t, m in self.data.links if m == meter_id]
        return [copy.deepcopy(t) for t in sorted(linked, key=lambda t: t.phone)]

    async def meters_of(self, tenant_id):
        return [copy.deepcopy(self.data.meters[m]) for t, m in sorted(self.data.links) if t == tenant_id]


class FakePayments(_Repo):
    async def add(self, payment: Payment) -> None:
        for other in self.data.payments.values():
            active = other.status.value in ("requested", "pending")
            if (active and other.phone == payment.phone) or (
                payment.idempotency_key and other.idempotency_key == payment.idempotency_key):
                raise Conflict("conflict", code="payment_pending")
        self.data.payments[payment.id] = copy.deepcopy(payment)

    def _find(self, predicate):
        return next((copy.deepcopy(p) for p in self.data.payments.values() if predicate(p)), None)

    async def get(self, payment_id):
        return copy.deepcopy(self.data.payments.get(payment_id))

    async def get_for_update(self, payment_id):
        return await self.get(payment_id)

    async def get_by_checkout_id(self, checkout_request_id, *, for_update=False):
        return self._find(lambda p: p.checkout_request_id == checkout_request_id)

    async def get_by_idempotency_key(self, key):
        return self._find(lambda p: p.idempotency_key == key)

    async def get_by_receipt(self, receipt):
        return self._find(lambda p: p.mpesa_receipt == receipt)

    async def active_for_phone(self, phone):
        return self._find(lambda p: p.phone == phone and p.status.value in ("requested", "pending"))

    async def stale(self, status, *, before, limit=100):
        found = [p for p in self.data.payments.values() if p.status.value == status and p.updated_at < before]
        return copy.deepcopy(found[:limit])

    async def in_review(self):
        return [copy.deepcopy(p) for p in self.data.payments.values()
                if p.status.value == "needs_review" and p.resolved_at is None]

    async def save(self, payment):
        self.data.payments[payment.id] = copy.deepcopy(payment)

    async def save_if(self, payment, *, was):
        stored = self.data.payments.get(payment.id)
        if stored is None or stored.status is not was:
            return False
        await self.save(payment)
        return True


class FakeCallbacks(_Repo):
    async def add(self, *, body, source, received_at, kind="stk", outcome="received", trans_id=None, note=None,
                  checkout_request_id=None):
        self.data.callbacks.append({"id": len(self.data.callbacks) + 1, "body": body, "source": source,
                                    "outcome": outcome, "checkout_request_id": checkout_request_id, "payment_id": None,
                                    "kind": kind, "trans_id": trans_id, "note": note})
        return len(self.data.callbacks)

    async def c2b_waiting(self, *, outcome, limit=100):
        return [(c["id"], c["body"], FakeClock().now(), c["note"]) for c in self.data.callbacks
                if c["kind"] == "c2b_confirmation" and c["outcome"] == outcome][:limit]

    async def set_outcome(self, callback_id, *, outcome, checkout_request_id, payment_id):
        self.data.callbacks[callback_id - 1].update(outcome=outcome, checkout_request_id=checkout_request_id,
                                                    payment_id=payment_id)

    async def unresolved_orphans(self, limit=100):
        return [(c["id"], c["body"], FakeClock().now()) for c in self.data.callbacks if c["outcome"] == "orphan"][:limit]

    async def unapplied(self, limit=100):
        return [(c["id"], c["checkout_request_id"], FakeClock().now()) for c in self.data.callbacks
                if c["outcome"] == "error"][:limit]

    async def resolve_orphan(self, callback_id):
        callback = self.data.callbacks[callback_id - 1]
        if callback["outcome"] not in ("orphan", "error"):
            return False
        callback["outcome"] += "_resolved"
        return True

    async def lock_checkout(self, checkout_request_id):
        return None  # one process, no concurrency

    async def received(self, limit):
        return [c["id"] for c in self.data.callbacks if c["outcome"] == "received" and c["kind"] == "stk"][:limit]

    async def claim_received(self, callback_id, *, wait):
        callback = self.data.callbacks[callback_id - 1]
        return callback["body"] if callback["outcome"] == "received" else None

    async def orphans_for(self, checkout_request_id):
        return [(c["id"], c["body"]) for c in self.data.callbacks
                if c["checkout_request_id"] == checkout_request_id and c["outcome"] == "orphan"]

    async def body(self, callback_id):
        return self.data.callbacks[callback_id - 1]["body"]


class FakeTopUps(_Repo):
    async def add(self, topup: TopUp) -> None:
        if topup.payment_id and any(t.payment_id == topup.payment_id for t in self.data.topups.values()):
            raise Conflict("this payment already has a top-up", code="topup_exists")
        self.data.topups[topup.id] = copy.deepcopy(topup)

    async def get(self, topup_id, *, for_update=False):
        return copy.deepcopy(self.data.topups.get(topup_id))

    async def by_request_key(self, key):
        return next((copy.deepcopy(t) for t in self.data.topups.values() if t.request_key == key), None)

    async def for_payment(self, payment_id):
        return next((copy.deepcopy(t) for t in self.data.topups.values() if t.payment_id == payment_id), None)

    async def save(self, topup, *, held_by=None):
        stored = self.data.topups.get(topup.id)
        if held_by is not None and (stored is None or stored.claimed_by != held_by):
            raise ClaimLost(f"top-up {topup.id} is no longer held by {held_by}")
        if topup.status.value == "sending" and any(
                t.meter_id == topup.meter_id and t.status.value == "sending" and t.id != topup.id
                for t in self.data.topups.values()):
            raise Conflict("another top-up for this meter is in flight", code="meter_busy")
        self.data.topups[topup.id] = copy.deepcopy(topup)

    async def in_review(self):
        return [copy.deepcopy(t) for t in self.data.topups.values()
                if t.status.value == "needs_review" and t.resolved_at is None]

    async def stale(self, *, before, limit=100):
        return [copy.deepcopy(t) for t in self.data.topups.values()
                if t.status.value in ("queued", "sending") and t.next_attempt_at and t.next_attempt_at < before][:limit]

    def _silent(self, worker, since):
        seen = self.data.heartbeats.get(worker)
        return seen is not None and seen < since

    async def holder_silent(self, topup_id, *, since):
        topup = self.data.topups.get(topup_id)
        return bool(topup and topup.claimed_by and self._silent(topup.claimed_by, since))

    async def held_by_silent_workers(self, *, since, limit=100):
        return [copy.deepcopy(t) for t in self.data.topups.values()
                if t.status.value == "sending" and t.claimed_by and self._silent(t.claimed_by, since)][:limit]


class FakeJobs(_Repo):
    async def enqueue(self, kind, payload, *, run_after=None):
        self.data.jobs.append(Job(id=len(self.data.jobs) + 1, kind=kind, payload=dict(payload), attempts=0,
                                  run_after=run_after or datetime.now(UTC)))

    def of_kind(self, kind):
        return [job for job in self.data.jobs if job.kind == kind]


class FakeNotifications(_Repo):
    async def add(self, **row):
        row["provider_id"] = row.get("provider_id") or None  # as the table keeps it
        self.data.notifications.append(dict(row, id=len(self.data.notifications) + 1))

    def _notice(self, row):
        return SentNotice(id=row["id"], event=row["event"], channel=row["channel"], recipient=row["recipient"],
                          payment_id=row.get("payment_id"), topup_id=row.get("topup_id"), message=row["message"],
                          provider_id=row.get("provider_id"), delivery_status=row.get("delivery_status"),
                          delivery_error=row.get("delivery_error"), delivered_at=row.get("delivered_at"))

    async def get(self, notification_id):
        rows = [n for n in self.data.notifications if n.get("id") == notification_id]
        return self._notice(rows[0]) if rows else None

    async def told(self, payment_id, event):
        return [(n["recipient"], n["message"]) for n in self.data.notifications
                if n.get("payment_id") == payment_id and n["event"] == event
                and (n["status"] in ("sent", "skipped") or (n["channel"] == "sms" and n["status"] == "failed"))]

    async def by_provider_id(self, provider_id):
        rows = [n for n in self.data.notifications if n.get("provider_id") == provider_id]
        return self._notice(rows[-1]) if rows else None

    async def set_delivery(self, notification_id, *, status, error, delivered_at):
        row = next(n for n in self.data.notifications if n.get("id") == notification_id)
        row.update(delivery_status=status, delivery_error=error)
        if delivered_at is not None:
            row["delivered_at"] = delivered_at

    async def lock_alerts(self):
        return None  # one process

    async def last_alert_at(self, event):
        return max((n["at"] for n in self.data.notifications if n["event"] == event and n["status"] != "failed"),
                   default=None)

    async def start_alert(self, *, at, event, recipient, message):
        self.data.notifications.append(dict(at=at, channel="pending", event=event, recipient=recipient,
                                            message=message, status="sending", error=None))
        return len(self.data.notifications)

    async def finish_alert(self, alert_id, *, channel, status, error, provider_id=None):
        self.data.notifications[alert_id - 1].update(channel=channel, status=status, error=error,
                                                     provider_id=provider_id)


class FakeAudit(_Repo):
    async def record(self, **row):
        self.data.audit.append(row)


class FakeUsage(_Repo):
    """Readings and tenants' alert settings (what the top-up engine, the live reader and the dialogue use);
    the rest is tested on SQL."""

    async def add_reading(self, reading):
        self.data.readings.append(reading)

    async def readings(self, meter_id, *, since=None, until=None):
        return sorted((r for r in self.data.readings if r.meter_id == meter_id
                       and (since is None or r.at >= since) and (until is None or r.at < until)), key=lambda r: r.at)

    async def daily(self, meter_id, *, since=None, until=None):
        return []

    async def meter(self, meter_id):
        from core.usage.model import MeterUsage
        return MeterUsage(meter_id)

    async def alert(self, tenant_id, meter_id):
        from core.usage.model import TenantAlert
        return self.data.alerts.get((tenant_id, meter_id)) or TenantAlert(tenant_id, meter_id)

    async def save_alert(self, alert):
        self.data.alerts[(alert.tenant_id, alert.meter_id)] = alert

    async def topup_in_flight(self, meter_id):
        return any(t.meter_id == meter_id and t.status.value == "sending" for t in self.data.topups.values())


class FakeUnitOfWork:
    """Changes land in the shared store only on commit (a snapshot is restored otherwise)."""

    def __init__(self, store: FakeStore | None = None, *, single_writer: bool = False) -> None:
        self.store = store or FakeStore()
        self.commits = 0
        self._plain = False
        self.single_writer = single_writer

    def autocommit(self):
        self._plain = True  # the next `async with`: every write stays, nothing is rolled back
        return self

    async def __aenter__(self):
        self._snapshot = None if self._plain else copy.deepcopy(self.store)
        self._plain = False
        self.meters, self.tenants = FakeMeters(self.store), FakeTenants(self.store)
        self.payments, self.callbacks = FakePayments(self.store), FakeCallbacks(self.store)
        self.topups, self.jobs = FakeTopUps(self.store), FakeJobs(self.store)
        self.notifications, self.audit = FakeNotifications(self.store), FakeAudit(self.store)
        self.usage = FakeUsage(self.store)
        self._committed = False
        return self

    async def __aexit__(self, *exc):
        if not self._committed and self._snapshot is not None:
            restored = self._snapshot
            for name in vars(restored):
                setattr(self.store, name, getattr(restored, name))

    async def commit(self):
        self._committed = True
        self.commits += 1

    async def keep_callback(self, *, body, source, received_at, outcome="received", checkout_request_id=None):
        self.commits += 1
        return await FakeCallbacks(self.store).add(body=body, source=source, received_at=received_at, outcome=outcome,
                                                   checkout_request_id=checkout_request_id)


class FakeDaraja:
    """Records pushes; answers with scripted results."""

    def __init__(self) -> None:
        self.pushes: list[StkPushRequest] = []
        self.queries: list[str] = []
        self.push_error: UpstreamError | None = None
        self.query_results: dict[str, StkQueryResult] = {}

    async def stk_push(self, request: StkPushRequest) -> StkPushAccepted:
        self.pushes.append(request)
        if self.push_error:
            raise self.push_error
        n = len(self.pushes)
        return StkPushAccepted(f"MR-{n}", f"ws_CO_TEST{n:04d}", "Success. Request accepted for processing")

    async def stk_query(self, checkout_request_id: str) -> StkQueryResult:
        self.queries.append(checkout_request_id)
        return self.query_results.get(checkout_request_id, StkQueryResult(processing=True))


class FakeMeterGateway:
    """Meters in memory, behaving like the sandbox's (our own model), with scripted failures."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        from sandbox.tuya_meters import make_meter

        self._make = make_meter
        self.clock = clock  # report times follow it (else the wall clock)
        self.meters: dict = {}
        self.sent: list = []  # (device_id, commands) actually applied
        self.offline: set[str] = set()
        self.lose_answer: int = 0  # next N sends apply, then fail as if the answer was lost
        self.not_applied: int = 0  # next N sends answer OK but change nothing
        self.refuse: UpstreamError | None = None
        self.report_reads = 0

    def add(self, device_id: str, profile: str = "seed", balance="100", price="25"):
        meter = self._make(device_id, profile, name=None, online=True,
                           balance=Decimal(balance), price=Decimal(price), rate_kw=Decimal(0))
        if self.clock is not None:
            meter.wall = lambda: self.clock.now().timestamp()
        self.meters[device_id] = meter
        return meter

    def dp_specs(self, device_id: str) -> dict:
        from core.meters.profiles import parse_specifications

        specs = parse_specifications(self.meters[device_id].specifications())
        return {code: spec.to_dict() for code, spec in specs.items()}

    def _online(self, device_id: str) -> None:
        if device_id in self.offline:
            raise DeviceOffline()

    async def device_info(self, device_id):
        return {"online": device_id not in self.offline}

    async def specifications(self, device_id):
        from core.meters.profiles import parse_specifications

        return list(parse_specifications(self.meters[device_id].specifications()).values())

    async def status(self, device_id):
        # What the cloud last heard (meter.report_late makes a slow meter), not the meter's truth.
        self._online(device_id)
        return {item["code"]: item["value"] for item in self.meters[device_id].status()}

    async def reports(self, device_id, codes):
        self.report_reads += 1
        return {code: DpReport(value, datetime.fromtimestamp(at, UTC))
                for code, (value, at) in self.meters[device_id].reported().items() if code in codes}

    async def send_commands(self, device_id, commands):
        self._online(device_id)
        if self.refuse:
            raise self.refuse
        if self.not_applied:
            self.not_applied -= 1
            return
        meter = self.meters[device_id]
        for code, value in meter.validate(commands):
            meter.apply(code, value)
        self.sent.append((device_id, commands))
        if self.lose_answer:
            self.lose_answer -= 1
            raise UpstreamError("the Tuya cloud did not answer in time", code="tuya_unavailable", transient=True)


@dataclass(frozen=True)
class SmsAccepted:
    message_id: str


class AtLikeSms:
    """An SMS sender that answers as Africa's Talking does: each message accepted with its own id."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, phone: str, message: str) -> SmsAccepted:
        self.sent.append((phone, message))
        return SmsAccepted(f"ATXid_{len(self.sent)}")
