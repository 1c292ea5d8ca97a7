"""USSD's storage and the hop handler on both engines, without HTTP: the session store's race rules,
recent payments, the balance read's time limit, and the migration."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from core.admin.registry import AddMeter, AddTenant, add_meter, add_tenant
from core.dialogue.service import DialogueDeps
from core.dialogue.sessions import UssdSession
from core.payments.model import Channel, Payment, PaymentStatus
from core.payments.service import PaymentLimits
from core.shared.clock import SystemClock
from storage.migrate import alembic_config, upgrade
from storage.uow import SqlUnitOfWork
from storage.ussd_sessions import SqlPaymentHistory, SqlUssdSessionStore
from ussd.hop import Hop, UssdConfig, UssdDeps, answer

NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


def record(session_id: str = "s1", hops: int = 1, text: str = "", **extra) -> UssdSession:
    return UssdSession(session_id=session_id, phone="254712345678", state={"language": "en"}, last_text=text,
                         last_answer="CON x", hops=hops, ended=False, created_at=NOW, updated_at=NOW, **extra)


async def test_session_store_lets_one_hop_win(engine):
    store = SqlUssdSessionStore(engine)
    assert await store.get("s1") is None
    assert await store.save(record(), expected_hops=None)
    assert not await store.save(record(), expected_hops=None)  # the same first hop twice at once
    assert await store.save(record(hops=2, text="1"), expected_hops=1)
    assert not await store.save(record(hops=2, text="2"), expected_hops=1)  # overtaken: no lost update
    saved = await store.get("s1")
    assert (saved.hops, saved.last_text, saved.created_at, saved.end_report) == (2, "1", NOW, {})
    assert await store.record_end("s1", status="Success", report={"hopsCount": "2"}, at=NOW)
    assert not await store.record_end("nobody", status="Failed", report={}, at=NOW)
    ended = await store.get("s1")
    assert ended.ended and ended.end_status == "Success" and ended.end_report == {"hopsCount": "2"}
    assert await store.purge(before=NOW + timedelta(seconds=1)) == 1 and await store.get("s1") is None


async def seed(engine) -> None:
    for number, active in (("A101", True), ("A102", True), ("OFF1", False)):
        meter = await add_meter(AddMeter(number=number, name=f"Flat {number}", device_id=f"dev-{number}"),
                                uow=SqlUnitOfWork(engine))
        async with SqlUnitOfWork(engine) as uow:
            meter.active = active
            meter.last_balance, meter.last_balance_at = Decimal("420.5"), datetime.now(UTC) - timedelta(minutes=7)
            await uow.meters.save(meter)
            await uow.commit()
    await add_tenant(AddTenant(phone="0712345678", meter_numbers=["A101", "OFF1"]), uow=SqlUnitOfWork(engine))


async def test_recent_payments_newest_first_and_only_the_callers(engine):
    await seed(engine)
    async with SqlUnitOfWork(engine) as uow:
        meter = await uow.meters.get_by_number("A101")
        for i, (phone, status) in enumerate([("254712345678", "completed"), ("254712345678", "failed"),
                                             ("254722000111", "completed"), ("254712345678", "cancelled"),
                                             ("254712345678", "completed")]):
            at = NOW + timedelta(minutes=i)
            await uow.payments.add(Payment(id=f"p{i}", amount=100 + i, phone=phone, meter_id=meter.id,
                                           channel=Channel.API, created_at=at, updated_at=at,
                                           status=PaymentStatus(status)))
        await uow.commit()
    lines = await SqlPaymentHistory(engine).recent("254712345678", 3)
    assert [(p.amount, p.status, p.meter_number) for p in lines] == [(104, "completed", "A101"),
                                                                     (103, "cancelled", "A101"), (101, "failed", "A101")]
    assert lines[0].at == NOW + timedelta(minutes=4)
    assert await SqlPaymentHistory(engine).recent("254799999999", 3) == []


class Reader:
    def __init__(self, value=None, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.value, self.delay_s, self.error, self.calls = value, delay_s, error, 0

    async def read_balance(self, meter):
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.error:
            raise self.error
        return self.value


def deps(engine, reader=None) -> UssdDeps:
    dialogue = DialogueDeps(uow=lambda: SqlUnitOfWork(engine), limits=PaymentLimits(10, 70_000), clock=SystemClock(),
                            history=SqlPaymentHistory(engine), balance_reader=reader)
    return UssdDeps(dialogue=dialogue, sessions=SqlUssdSessionStore(engine),
                    config=UssdConfig(push_delay_s=3, balance_timeout_s=0.3))


async def balance_screen(engine, reader, session_id: str) -> str:
    d = deps(engine, reader)
    await answer(Hop(session_id=session_id, phone="+254712345678", text=""), d)
    return (await answer(Hop(session_id=session_id, phone="+254712345678", text="2"), d)).text


@pytest.mark.parametrize("reader,expected", [
    (None, "KES 420.50, 7 min ago"),
    (Reader(Decimal("99.5")), "KES 99.50 now"),
    (Reader(Decimal("99.5"), delay_s=5), "KES 420.50, 7 min ago"),
    (Reader(error=RuntimeError("cloud down")), "KES 420.50, 7 min ago"),
    (Reader(None), "KES 420.50, 7 min ago"),
])
async def test_balance_is_live_within_the_time_limit_or_last_known(engine, reader, expected):
    await seed(engine)
    started = time.monotonic()
    screen = await balance_screen(engine, reader, f"bal-{id(reader)}")
    assert time.monotonic() - started < 1.5
    assert screen == f"CON Balance\nMeter A101 Flat A101\n{expected}\n1. Buy electricity\n2. Alerts\n0. Back 00. Home"


async def test_inactive_linked_meters_are_not_offered(engine):
    await seed(engine)
    d = deps(engine)
    await answer(Hop(session_id="s-off", phone="0712345678", text=""), d)
    listing = await answer(Hop(session_id="s-off", phone="0712345678", text="1"), d)
    assert "OFF1" not in listing.text and "1. A101 Flat A101" in listing.text


async def test_confirm_records_a_deferred_push(engine):
    await seed(engine)
    d = deps(engine)
    for text in ("", "1", "1*1", "1*1*150", "1*1*150*1"):
        last = await answer(Hop(session_id="s-pay", phone="254712345678", text=text), d)
    assert last.outcome == "end" and "KES 150" in last.text
    async with engine.connect() as conn:
        job = (await conn.execute(sa.text("SELECT run_after, created_at, payload FROM jobs"))).one()
        payment = (await conn.execute(sa.text("SELECT status, channel, tenant_id FROM payments"))).one()
    assert (payment.status, payment.channel) == ("requested", "ussd") and payment.tenant_id
    from tests.ussd_helpers import as_datetime

    assert 2.9 <= (as_datetime(job.run_after) - as_datetime(job.created_at)).total_seconds() <= 4


def test_migration_0003_goes_down_and_up(tmp_path):
    from alembic import command

    url = f"sqlite+aiosqlite:///{tmp_path}/m.db"
    upgrade(url)
    command.downgrade(alembic_config(url), "0002")
    inspector_tables = _tables(tmp_path / "m.db")
    assert "ussd_sessions" not in inspector_tables and "payments" in inspector_tables
    upgrade(url)
    assert "ussd_sessions" in _tables(tmp_path / "m.db")


def _tables(path) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
