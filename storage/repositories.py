"""SQL repositories behind core's ports. Each works on the unit of work's connection."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.meters.model import Meter
from core.notify.model import SentNotice
from core.payments.model import Channel, Payment, PaymentStatus
from core.shared.errors import Conflict
from core.tenants.model import Tenant
from core.topups.model import ClaimLost, TopUp, TopUpStatus
from storage.rows import from_row, insert_or_nothing, select_by, to_row, update_by_id
from storage.tables import (
    audit_log,
    meter_access,
    meters,
    mpesa_callbacks,
    notifications,
    payments,
    tenants,
    topups,
    worker_heartbeats,
)


class _Repository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @property
    def locks_rows(self) -> bool:
        # SQLite has one writer (BEGIN IMMEDIATE); PostgreSQL needs explicit row locks.
        return self.conn.dialect.name != "sqlite"

    async def _insert(self, table: sa.Table, row: dict, conflict_message: str, code: str) -> None:
        # ON CONFLICT DO NOTHING instead of a savepoint around a failing INSERT: one round trip instead
        # of three, and the transaction stays usable. It covers every unique index (partial ones too).
        result = await self.conn.execute(insert_or_nothing(table, self.conn.dialect.name), row)
        if result.rowcount != 1:
            raise Conflict(conflict_message, code=code)


class SqlMeterRepository(_Repository):
    async def add(self, meter: Meter) -> None:
        await self._insert(meters, to_row(meter, meters),
                           f"meter number {meter.number} or device {meter.device_id} is taken", "meter_exists")

    async def get(self, meter_id: str) -> Meter | None:
        return from_row(Meter, (await self.conn.execute(select_by(meters, "id"), {"value": meter_id})).first())

    async def get_by_number(self, number: str) -> Meter | None:
        row = (await self.conn.execute(select_by(meters, "number"), {"value": number})).first()
        return from_row(Meter, row)

    async def by_account(self, key: str) -> list[Meter]:
        """core.meters.model.account_key applied to the stored numbers, in SQL: one query."""
        folded = sa.func.upper(sa.func.replace(sa.func.replace(meters.c.number, "-", ""), " ", ""))
        rows = await self.conn.execute(sa.select(meters).where(folded == key).order_by(meters.c.number))
        return [from_row(Meter, row) for row in rows]

    async def list(self) -> list[Meter]:
        rows = await self.conn.execute(sa.select(meters).order_by(meters.c.number))
        return [from_row(Meter, row) for row in rows]

    async def save(self, meter: Meter) -> None:
        await self.conn.execute(update_by_id(meters), {"row_id": meter.id, **to_row(meter, meters)})


class SqlTenantRepository(_Repository):
    async def add(self, tenant: Tenant) -> None:
        await self._insert(tenants, to_row(tenant, tenants), "a tenant with this phone exists", "tenant_exists")

    async def get(self, tenant_id: str) -> Tenant | None:
        return from_row(Tenant, (await self.conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first())

    async def get_by_phone(self, phone: str) -> Tenant | None:
        return from_row(Tenant, (await self.conn.execute(select_by(tenants, "phone"), {"value": phone})).first())

    async def list(self) -> list[Tenant]:
        return [from_row(Tenant, row) for row in await self.conn.execute(sa.select(tenants).order_by(tenants.c.phone))]

    async def save(self, tenant: Tenant) -> None:
        await self.conn.execute(tenants.update().where(tenants.c.id == tenant.id).values(**to_row(tenant, tenants)))

    async def link(self, tenant_id: str, meter_id: str) -> None:
        exists = await self.conn.scalar(sa.select(sa.func.count()).select_from(meter_access).where(
            meter_access.c.tenant_id == tenant_id, meter_access.c.meter_id == meter_id))
        if not exists:
            await self.conn.execute(meter_access.insert().values(
                tenant_id=tenant_id, meter_id=meter_id, created_at=sa.func.now()))

    async def meters_of(self, tenant_id: str) -> list[Meter]:
        query = (sa.select(meters).join(meter_access, meter_access.c.meter_id == meters.c.id)
                 .where(meter_access.c.tenant_id == tenant_id).order_by(meters.c.number))
        return [from_row(Meter, row) for row in await self.conn.execute(query)]

    async def linked_to(self, meter_id: str) -> list[Tenant]:
        query = (sa.select(tenants).join(meter_access, meter_access.c.tenant_id == tenants.c.id)
                 .where(meter_access.c.meter_id == meter_id).order_by(tenants.c.phone))
        return [from_row(Tenant, row) for row in await self.conn.execute(query)]

    async def unlink(self, tenant_id: str, meter_id: str) -> bool:
        """The tenant no longer sees the meter in menus; True when a link was removed."""
        result = await self.conn.execute(meter_access.delete().where(
            meter_access.c.tenant_id == tenant_id, meter_access.c.meter_id == meter_id))
        return result.rowcount > 0


_SAVE_IF = update_by_id(payments).where(payments.c.status == sa.bindparam("was"))


def _payment(row) -> Payment | None:
    return from_row(Payment, row, status=PaymentStatus, channel=Channel)


class SqlPaymentRepository(_Repository):
    async def add(self, payment: Payment) -> None:
        await self._insert(payments, to_row(payment, payments),
                           "an M-Pesa prompt is already waiting on this phone, or this Idempotency-Key was used",
                           "payment_pending")

    async def _by(self, column: str, value: str, *, for_update: bool = False) -> Payment | None:
        query = select_by(payments, column, for_update=for_update and self.locks_rows)
        return _payment((await self.conn.execute(query, {"value": value})).first())

    async def get(self, payment_id: str) -> Payment | None:
        return await self._by("id", payment_id)

    async def get_for_update(self, payment_id: str) -> Payment | None:
        return await self._by("id", payment_id, for_update=True)

    async def get_by_checkout_id(self, checkout_request_id: str, *, for_update: bool = False) -> Payment | None:
        return await self._by("checkout_request_id", checkout_request_id, for_update=for_update)

    async def get_by_idempotency_key(self, key: str) -> Payment | None:
        return await self._by("idempotency_key", key)

    async def get_by_receipt(self, receipt: str) -> Payment | None:
        return await self._by("mpesa_receipt", receipt)

    async def active_for_phone(self, phone: str) -> Payment | None:
        query = sa.select(payments).where(payments.c.phone == phone, payments.c.status.in_(["requested", "pending"]))
        return _payment((await self.conn.execute(query)).first())

    async def stale(self, status: str, *, before: datetime, limit: int = 100) -> list[Payment]:
        query = (sa.select(payments).where(payments.c.status == status, payments.c.updated_at < before)
                 .order_by(payments.c.updated_at).limit(limit))
        return [_payment(row) for row in await self.conn.execute(query)]

    async def in_review(self) -> list[Payment]:
        query = (sa.select(payments).where(payments.c.status == "needs_review", payments.c.resolved_at.is_(None))
                 .order_by(payments.c.updated_at))
        return [_payment(row) for row in await self.conn.execute(query)]

    async def save(self, payment: Payment) -> None:
        await self.conn.execute(update_by_id(payments), {"row_id": payment.id, **_changeable(payment)})

    async def save_if(self, payment: Payment, *, was: PaymentStatus) -> bool:
        result = await self.conn.execute(_SAVE_IF, {"row_id": payment.id, "was": was.value, **_changeable(payment)})
        return result.rowcount == 1


# A payment's columns set once, when it is added, and never by a save (core/payments/model.py changes none of
# them). Left out of its UPDATE: SQLite rewrites the entry of every index on a column the UPDATE assigns,
# changed or not, and five of payments' eight indexes are on these (the id, phone, meter, idempotency key,
# created_at). Measured on SQLite, an UPDATE of one stored payment: 290-303 µs -> 178-186 with 1,000,000
# stored, 156-171 -> 100-107 with 10,000.
_SET_ONCE = frozenset({"id", "amount", "phone", "meter_id", "channel", "idempotency_key", "created_at"})


def _changeable(payment: Payment) -> dict:
    return {name: value for name, value in to_row(payment, payments).items() if name not in _SET_ONCE}


_ADD_CALLBACK = mpesa_callbacks.insert()
_ORPHANS_FOR = (sa.select(mpesa_callbacks.c.id, mpesa_callbacks.c.body)
                .where(mpesa_callbacks.c.checkout_request_id == sa.bindparam("cid"),
                       mpesa_callbacks.c.outcome == "orphan").order_by(mpesa_callbacks.c.id))


class SqlCallbackRepository(_Repository):
    async def add(self, *, body: str, source: str | None, received_at: datetime, kind: str = "stk",
                  outcome: str = "received", trans_id: str | None = None, note: str | None = None,
                  checkout_request_id: str | None = None) -> int:
        result = await self.conn.execute(_ADD_CALLBACK, {
            "body": body, "source": source, "received_at": received_at, "outcome": outcome, "kind": kind,
            "trans_id": trans_id, "note": note, "checkout_request_id": checkout_request_id})
        return result.inserted_primary_key[0]

    async def set_c2b_outcome(self, callback_id: int, *, outcome: str, trans_id: str | None, payment_id: str | None,
                              note: str | None) -> None:
        await self.conn.execute(mpesa_callbacks.update().where(mpesa_callbacks.c.id == callback_id).values(
            outcome=outcome, trans_id=trans_id, payment_id=payment_id, note=note))

    async def c2b_claimed(self, trans_id: str, *, claims: tuple[str, ...]) -> bool:
        query = sa.select(mpesa_callbacks.c.id).where(
            mpesa_callbacks.c.trans_id == trans_id, mpesa_callbacks.c.kind == "c2b_confirmation",
            mpesa_callbacks.c.outcome.in_(claims)).limit(1)
        return (await self.conn.scalar(query)) is not None

    async def c2b_waiting(self, *, outcome: str, limit: int = 100) -> list[tuple[int, str, datetime, str | None]]:
        query = (sa.select(mpesa_callbacks.c.id, mpesa_callbacks.c.body, mpesa_callbacks.c.received_at,
                           mpesa_callbacks.c.note)
                 .where(mpesa_callbacks.c.kind == "c2b_confirmation", mpesa_callbacks.c.outcome == outcome)
                 .order_by(mpesa_callbacks.c.id).limit(limit))
        return [tuple(row) for row in await self.conn.execute(query)]

    async def c2b_body(self, callback_id: int, *, outcome: str) -> str | None:
        query = sa.select(mpesa_callbacks.c.body).where(
            mpesa_callbacks.c.id == callback_id, mpesa_callbacks.c.kind == "c2b_confirmation",
            mpesa_callbacks.c.outcome == outcome)
        if self.locks_rows:
            query = query.with_for_update()
        return await self.conn.scalar(query)

    async def c2b_move(self, callback_id: int, *, from_outcome: str, to_outcome: str, payment_id: str | None) -> bool:
        result = await self.conn.execute(mpesa_callbacks.update().where(
            mpesa_callbacks.c.id == callback_id, mpesa_callbacks.c.kind == "c2b_confirmation",
            mpesa_callbacks.c.outcome == from_outcome).values(outcome=to_outcome, payment_id=payment_id))
        return result.rowcount == 1

    async def set_outcome(self, callback_id: int, *, outcome: str, checkout_request_id: str | None,
                          payment_id: str | None) -> None:
        await self.conn.execute(update_by_id(mpesa_callbacks), {
            "row_id": callback_id, "outcome": outcome, "checkout_request_id": checkout_request_id,
            "payment_id": payment_id})

    async def unresolved_orphans(self, limit: int = 100) -> list[tuple[int, str, datetime]]:
        query = (sa.select(mpesa_callbacks.c.id, mpesa_callbacks.c.body, mpesa_callbacks.c.received_at)
                 .where(mpesa_callbacks.c.outcome == "orphan", mpesa_callbacks.c.kind == "stk").order_by(mpesa_callbacks.c.id).limit(limit))
        return [tuple(row) for row in await self.conn.execute(query)]

    async def unapplied(self, limit: int = 100) -> list[tuple[int, str | None, datetime]]:
        """Callbacks kept but not applied because applying them failed (outcome `error`)."""
        reference = sa.func.coalesce(mpesa_callbacks.c.checkout_request_id, mpesa_callbacks.c.trans_id)
        query = (sa.select(mpesa_callbacks.c.id, reference, mpesa_callbacks.c.received_at)
                 .where(mpesa_callbacks.c.outcome == "error").order_by(mpesa_callbacks.c.id).limit(limit))
        return [tuple(row) for row in await self.conn.execute(query)]

    async def resolve_orphan(self, callback_id: int) -> bool:
        for outcome in ("orphan", "error"):
            result = await self.conn.execute(mpesa_callbacks.update().where(
                mpesa_callbacks.c.id == callback_id, mpesa_callbacks.c.outcome == outcome).values(
                outcome=f"{outcome}_resolved"))
            if result.rowcount == 1:
                return True
        return False

    async def received(self, limit: int) -> list[int]:
        """STK callbacks kept and not applied yet, oldest first (a partial index holds only these)."""
        query = (sa.select(mpesa_callbacks.c.id)
                 .where(mpesa_callbacks.c.outcome == "received", mpesa_callbacks.c.kind == "stk")
                 .order_by(mpesa_callbacks.c.id).limit(limit))
        return list((await self.conn.execute(query)).scalars())

    async def claim_received(self, callback_id: int, *, wait: bool) -> str | None:
        """Lock a kept, unapplied callback for this transaction and return its body; None when it is
        applied already or (wait=False) another worker is applying it now. The outcome written before
        commit releases it; a rollback leaves it `received` for the next drain."""
        query = sa.select(mpesa_callbacks.c.body).where(
            mpesa_callbacks.c.id == callback_id, mpesa_callbacks.c.outcome == "received")
        if self.locks_rows:
            query = query.with_for_update(skip_locked=not wait)
        return await self.conn.scalar(query)

    async def lock_checkout(self, checkout_request_id: str) -> None:
        """Serialise the push answer and the callback for one CheckoutRequestID (PostgreSQL; on SQLite
        the single writer already does). Without it a callback can miss a just-written, uncommitted id."""
        if self.locks_rows:
            await self.conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:cid))"), {"cid": checkout_request_id})

    async def orphans_for(self, checkout_request_id: str) -> list[tuple[int, str]]:
        return [(row.id, row.body) for row in await self.conn.execute(_ORPHANS_FOR, {"cid": checkout_request_id})]

    async def body(self, callback_id: int) -> str | None:
        return await self.conn.scalar(sa.select(mpesa_callbacks.c.body).where(mpesa_callbacks.c.id == callback_id))

    async def for_payment(self, payment_id: str) -> list[dict]:
        query = sa.select(mpesa_callbacks).where(mpesa_callbacks.c.payment_id == payment_id).order_by(mpesa_callbacks.c.id)
        return [dict(row._mapping) for row in await self.conn.execute(query)]


def _topup(row) -> TopUp | None:
    return from_row(TopUp, row, status=TopUpStatus)


class SqlTopUpRepository(_Repository):
    async def add(self, topup: TopUp) -> None:
        await self._insert(topups, to_row(topup, topups), "this top-up exists already (same payment or form)",
                           "topup_exists")

    async def get(self, topup_id: str, *, for_update: bool = False) -> TopUp | None:
        query = select_by(topups, "id", for_update=for_update and self.locks_rows)
        return _topup((await self.conn.execute(query, {"value": topup_id})).first())

    async def for_payment(self, payment_id: str) -> TopUp | None:
        return _topup((await self.conn.execute(sa.select(topups).where(topups.c.payment_id == payment_id))).first())

    async def by_request_key(self, key: str) -> TopUp | None:
        return _topup((await self.conn.execute(sa.select(topups).where(topups.c.request_key == key))).first())

    async def save(self, topup: TopUp, *, held_by: str | None = None) -> None:
        # Fencing: with `held_by`, only the claim's holder writes (a statement built per call; the common
        # unfenced save reuses the cached one).
        update = topups.update().where(topups.c.id == topup.id, topups.c.claimed_by == held_by)
        try:
            async with self.conn.begin_nested():
                if held_by is None:
                    result = await self.conn.execute(update_by_id(topups), {"row_id": topup.id, **to_row(topup, topups)})
                else:
                    result = await self.conn.execute(update.values(**to_row(topup, topups)))
        except IntegrityError:
            # uq_topups_sending_meter: another top-up for this meter is in flight.
            raise Conflict("another top-up for this meter is in flight", code="meter_busy") from None
        if held_by is not None and result.rowcount == 0:
            raise ClaimLost(f"top-up {topup.id} is no longer held by {held_by}")

    async def stale(self, *, before: datetime, limit: int = 100) -> list[TopUp]:
        query = (sa.select(topups).where(topups.c.status.in_(["queued", "sending"]), topups.c.next_attempt_at < before)
                 .order_by(topups.c.next_attempt_at).limit(limit))
        if self.locks_rows:
            # The sweep writes these rows back: never over a worker's claim made in between.
            query = query.with_for_update(skip_locked=True)
        return [_topup(row) for row in await self.conn.execute(query)]

    async def holder_silent(self, topup_id: str, *, since: datetime) -> bool:
        """True when the worker holding this top-up has a heartbeat, and its last one is older than `since`.
        A holder with no heartbeat row at all (a one-off CLI run) keeps its claim until the lease ends."""
        query = (sa.select(worker_heartbeats.c.seen_at)
                 .select_from(topups.join(worker_heartbeats, worker_heartbeats.c.worker_id == topups.c.claimed_by))
                 .where(topups.c.id == topup_id))
        seen_at = await self.conn.scalar(query)
        return seen_at is not None and seen_at < since

    async def held_by_silent_workers(self, *, since: datetime, limit: int = 100) -> list[TopUp]:
        silent = sa.select(worker_heartbeats.c.worker_id).where(worker_heartbeats.c.seen_at < since)
        query = (sa.select(topups).where(topups.c.status == "sending", topups.c.claimed_by.in_(silent))
                 .order_by(topups.c.next_attempt_at).limit(limit))
        if self.locks_rows:
            query = query.with_for_update(of=topups, skip_locked=True)
        return [_topup(row) for row in await self.conn.execute(query)]

    async def in_review(self) -> list[TopUp]:
        query = (sa.select(topups).where(topups.c.status == "needs_review", topups.c.resolved_at.is_(None))
                 .order_by(topups.c.updated_at))
        return [_topup(row) for row in await self.conn.execute(query)]

    async def list(self, *, status: str | None = None, limit: int = 200) -> list[TopUp]:
        query = sa.select(topups).order_by(topups.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(topups.c.status == status)
        return [_topup(row) for row in await self.conn.execute(query)]


ALERT_LOCK = 0x4C4D_414C  # "LMAL": pg_advisory_xact_lock key for the landlord's alerts


_NOTICE = (notifications.c.id, notifications.c.event, notifications.c.channel, notifications.c.recipient,
           notifications.c.payment_id, notifications.c.topup_id, notifications.c.message, notifications.c.provider_id,
           notifications.c.delivery_status, notifications.c.delivery_error, notifications.c.delivered_at)


def _provider_id(value: str | None) -> str | None:
    """The SMS gateway's message id as the column holds it (64 characters; none for an empty one)."""
    return (value or None) and value[:64]


class SqlNotificationRepository(_Repository):
    async def add(self, **row) -> None:
        row["provider_id"] = _provider_id(row.get("provider_id"))
        await self.conn.execute(notifications.insert().values(**row))

    async def lock_alerts(self) -> None:
        # SQLite: the transaction already holds the one writer lock (BEGIN IMMEDIATE).
        if self.locks_rows:
            await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ALERT_LOCK)))

    async def last_alert_at(self, event: str) -> datetime | None:
        return await self.conn.scalar(sa.select(sa.func.max(notifications.c.at))
                                      .where(notifications.c.event == event, notifications.c.status != "failed"))

    async def start_alert(self, *, at: datetime, event: str, recipient: str, message: str) -> int:
        return await self.conn.scalar(notifications.insert().values(
            at=at, channel="pending", event=event, recipient=recipient, message=message[:480], status="sending")
            .returning(notifications.c.id))

    async def finish_alert(self, alert_id: int, *, channel: str, status: str, error: str | None,
                           provider_id: str | None = None) -> None:
        await self.conn.execute(notifications.update().where(notifications.c.id == alert_id)
                                .values(channel=channel, status=status, error=(error or None) and error[:255],
                                        provider_id=_provider_id(provider_id)))

    async def get(self, notification_id: int) -> SentNotice | None:
        row = (await self.conn.execute(sa.select(*_NOTICE).where(notifications.c.id == notification_id))).first()
        return SentNotice(**row._mapping) if row else None

    async def by_provider_id(self, provider_id: str) -> SentNotice | None:
        # The newest: a transient failure's retry may have sent (and stored) the same text twice.
        query = (sa.select(*_NOTICE).where(notifications.c.provider_id == provider_id)
                 .order_by(notifications.c.id.desc()).limit(1))
        row = (await self.conn.execute(query)).first()
        return SentNotice(**row._mapping) if row else None

    async def set_delivery(self, notification_id: int, *, status: str, error: str | None,
                           delivered_at: datetime | None) -> None:
        values: dict = dict(delivery_status=status, delivery_error=(error or None) and error[:64])
        if delivered_at is not None:
            values["delivered_at"] = delivered_at
        await self.conn.execute(notifications.update().where(notifications.c.id == notification_id).values(**values))

    async def told(self, payment_id: str, event: str) -> list[tuple[str, str]]:
        query = (sa.select(notifications.c.recipient, notifications.c.message)
                 .where(notifications.c.payment_id == payment_id, notifications.c.event == event,
                        sa.or_(notifications.c.status.in_(("sent", "skipped")),
                               sa.and_(notifications.c.channel == "sms", notifications.c.status == "failed"))))
        return [(row.recipient, row.message) for row in await self.conn.execute(query)]

    async def for_payment(self, payment_id: str) -> list[dict]:
        query = sa.select(notifications).where(notifications.c.payment_id == payment_id).order_by(notifications.c.id)
        return [dict(r._mapping) for r in await self.conn.execute(query)]


class SqlAuditLog(_Repository):
    async def record(self, *, at: datetime, actor: str, action: str, target: str | None, reason: str | None,
                     details: dict | None = None) -> None:
        await self.conn.execute(audit_log.insert().values(at=at, actor=actor, action=action, target=target,
                                                          reason=reason, details=details or {}))

    async def recent(self, limit: int = 100) -> list[dict]:
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        return [dict(r._mapping) for r in await self.conn.execute(query)]
