"""USSD's storage and the hop handler on both engines, without HTTP: the session store's race rules,
recent payments, the balance read's time limit, and the migration."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from core.admin.registry import AddMeter, AddTenant, add_meter, add_tenant
from core.dialogue.service import DialogueDeps, find_caller
from core.dialogue.sessions import UssdSession
from core.payments.model import Channel, Payment, PaymentStatus
from core.payments.service import PaymentLimits
from core.shared.clock import SystemClock
from storage.callers import SqlCallerLookup
from storage.db import create_engine
from storage.migrate import alembic_config, upgrade
from storage.uow import SqlUnitOfWork
from storage.ussd_sessions import SqlPaymentHistory, SqlUssdSessionStore
from ussd.hop import Hop, UssdConfig, UssdDeps, answer

NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


def record(session_id: str = "s1", hops: int = 1, text: str = "", **extra) -> UssdSession:
    values = dict(phone="254712345678", created_at=NOW, updated_at=NOW, state={"language": "en"},
                  last_answer="CON x", ended=False) | extra
    return UssdSession(session_id=session_id, last_text=text, hops=hops, **values)


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


async def test_a_state_is_read_back_as_written_whichever_json_codec_took_it(engine):
    """storage/db.py's JSON codec writes with pydantic_core, and with json what that refuses (a lone
    surrogate, which a chat's text can carry): both are read back equal, alone and in a batch of hops."""
    store = SqlUssdSessionStore(engine)
    states = {"plain": {"language": "sw", "frame": {"screen": "buy_amount", "meter": "A101", "amount": None},
                        "history": [{"screen": "main", "page": 0}], "errors": 2, "ended": False},
              "unicode": {"language": "en", "name": "Wanjikũ ✓", "amount": 12345678901234567890},
              "surrogate": {"language": "en", "typed": "A1\ud80001"}}
    for session_id, state in states.items():
        assert await store.save(record(session_id, state=state), expected_hops=None)
    assert {sid: (await store.get(sid)).state for sid in states} == states
    for sid, state in states.items():
        assert await store.save(record(sid, hops=2, text="1", state=state | {"errors": 1}), expected_hops=1)
    opened = await asyncio.gather(*(store.open(sid, phone="254712345678", since=NOW) for sid in states))
    assert {found.session_id: found.state for found, _ in opened} == {sid: s | {"errors": 1} for sid, s in states.items()}
    # Written together: one INSERT, then one UPDATE, for the three (PostgreSQL: their rows one JSON document)
    batch = {f"b-{sid}": state for sid, state in states.items()}
    inserts, updates = store.inserts.batches, store.updates.batches
    assert all(await asyncio.gather(*(store.save(record(sid, state=s), expected_hops=None) for sid, s in batch.items())))
    assert all(await asyncio.gather(*(store.save(record(sid, hops=2, text="1", state=s | {"errors": 3}), expected_hops=1)
                                      for sid, s in batch.items())))
    assert (store.inserts.batches, store.updates.batches) == (inserts + 1, updates + 1)
    assert {sid: (await store.get(sid)).state for sid in batch} == {sid: s | {"errors": 3} for sid, s in batch.items()}


async def test_a_rush_of_hops_shares_reads_and_inserts_with_the_same_outcomes(engine):
    """Hops that arrive together read in one batch and insert in one: each still gets its own session or
    the count of its phone's sessions since its own `since`, and a session is inserted once, by the
    first of two hops racing with it."""
    store = SqlUssdSessionStore(engine)
    for minutes, session_id in ((50, "old-50"), (30, "old-30"), (10, "old-10")):
        at = NOW - timedelta(minutes=minutes)
        assert await store.save(record(session_id, created_at=at, updated_at=at), expected_hops=None)
    asks = [("old-30", NOW - timedelta(hours=1)), ("new-a", NOW - timedelta(hours=1)),
            ("new-b", NOW - timedelta(minutes=40)), ("new-c", NOW - timedelta(minutes=20)), ("new-d", NOW)]
    opened = await asyncio.gather(*(store.open(sid, phone="254712345678", since=since) for sid, since in asks))
    assert [(r.session_id if r else None, n) for r, n in opened] == [
        ("old-30", 0), (None, 3), (None, 2), (None, 1), (None, 0)]
    assert opened[0][0].created_at == NOW - timedelta(minutes=30) and opened[0][0].end_report == {}
    assert (await store.open("nobody", phone="254799999999", since=NOW - timedelta(hours=1))) == (None, 0)
    assert store.opens.batches == 2 and store.opens.items == 6  # the five together, then the lone one

    hops = ["s1", "s2", "s1", "s3", "old-10", "s2"]  # s1 and s2 twice: a retry racing its original
    before = store.inserts.batches
    saved = await asyncio.gather(*(store.save(record(sid, text=f"#{i}"), expected_hops=None)
                                   for i, sid in enumerate(hops)))
    assert saved == [True, True, False, True, False, False]
    assert [(await store.get(sid)).last_text for sid in ("s1", "s2", "s3")] == ["#0", "#1", "#3"]
    assert store.inserts.batches == before + 1  # the six hops in one INSERT


async def test_a_rush_of_next_hops_shares_one_update_with_the_same_outcomes(engine):
    """Hops on stored sessions that arrive together write in one UPDATE: each moves its session on only
    from the hop count it read, and of two hops racing on one session the first wins."""
    store = SqlUssdSessionStore(engine)
    for sid in ("s1", "s2", "s3", "moved-on"):
        assert await store.save(record(sid), expected_hops=None)
    assert await store.save(record("moved-on", hops=2, text="1"), expected_hops=1)
    hops = [("s1", 1), ("s2", 1), ("s1", 1), ("moved-on", 1), ("s3", 1), ("absent", 1)]
    before = store.updates.batches
    saved = await asyncio.gather(*(store.save(record(sid, hops=at + 1, text=f"1*{i}", ended=i == 4,
                                                     payment_id="p-4" if i == 4 else None,
                                                     updated_at=NOW + timedelta(seconds=i)), expected_hops=at)
                                   for i, (sid, at) in enumerate(hops)))
    assert saved == [True, True, False, False, True, False]
    assert store.updates.batches == before + 1  # the six hops in one UPDATE
    s1, s3, moved = [await store.get(sid) for sid in ("s1", "s3", "moved-on")]
    assert (s1.hops, s1.last_text, s1.updated_at, s1.created_at) == (2, "1*0", NOW, NOW)
    assert (s3.hops, s3.last_text, s3.ended, s3.payment_id) == (2, "1*4", True, "p-4")
    assert s3.updated_at == NOW + timedelta(seconds=4) and s3.state == {"language": "en"}
    assert (moved.hops, moved.last_text) == (2, "1")  # the hop that read it at 1 changed nothing
    assert await store.get("absent") is None


async def test_a_row_the_database_refuses_fails_its_own_hop_only(engine):
    store = SqlUssdSessionStore(engine)
    broken = record("broken", phone=None)  # NOT NULL: refused by both engines
    saved = await asyncio.gather(*(store.save(r, expected_hops=None) for r in (record("ok-1"), broken, record("ok-2"))),
                                 return_exceptions=True)
    assert saved[0] is True and saved[2] is True and isinstance(saved[1], sa.exc.IntegrityError)
    assert await store.get("ok-1") and await store.get("ok-2") and await store.get("broken") is None

    updated = await asyncio.gather(*(store.save(record(sid, hops=hops, text="1"), expected_hops=1)
                                     for sid, hops in (("ok-1", 2), ("ok-2", None))), return_exceptions=True)
    assert updated[0] is True and isinstance(updated[1], sa.exc.IntegrityError)
    assert [(await store.get(sid)).hops for sid in ("ok-1", "ok-2")] == [2, 1]


async def test_caller_lookup_gives_each_caller_what_a_unit_of_work_gives(engine):
    await seed(engine)
    phones = ["254712345678", "254799999999", "254712345678", "254722000111"]
    lookup = SqlCallerLookup(engine)
    found = await asyncio.gather(*(lookup.lookup(phone) for phone in phones))
    assert lookup.lookups.batches == 1
    for phone, (tenant, meters) in zip(phones, found, strict=True):
        assert (tenant, meters) == await find_caller(phone, SqlUnitOfWork(engine))
    tenant, meters = found[0]
    assert tenant.phone == "254712345678" and [m.number for m in meters] == ["A101", "OFF1"]
    assert found[1] == (None, []) and found[3] == (None, [])
    assert found[0][0] is not found[2][0] and found[0][1][0] is not found[2][1][0]  # each caller its own
    assert [m.number for m in (await lookup.lookup("254712345678"))[1]] == ["A101", "OFF1"]  # alone, too


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


FIRST_HOP_STATE = {"language": "en", "frame": {"screen": "main", "page": 0, "meter": None, "amount": None, "payer": None},
                   "history": [], "choices": [], "errors": 0, "balance": None, "payments": [], "payment_id": None,
                   "ended": False}
MAIN_MENU = "CON LipaMeter\n1. Buy electricity\n2. Check balance\n3. My payments\n4. Language"


@pytest.mark.postgres
async def test_a_batch_read_planned_while_the_table_was_small_does_not_scan_it_once_grown(pg_url):
    """At night the purge leaves ussd_sessions a few rows (and analyzed so); a month-start rush grows it
    faster than PostgreSQL analyzes it again. A plan kept from the small table (a prepared statement's generic
    plan, made after five runs) read the whole table for every batch of hops: each batch read is planned
    afresh from the table as it is (storage/db.py, plan_cache_mode)."""
    engine = create_engine(pg_url)
    try:
        await _grow_sessions(engine, 20, truncate=True)
        async with engine.begin() as conn:  # committed: a rolled-back ANALYZE leaves no statistics
            await conn.execute(sa.text("ANALYZE ussd_sessions"))
        store = SqlUssdSessionStore(engine)

        async def batch_read(n: int) -> None:
            asks = [store.open(f"s{n}-{i}", phone=f"2547{n:04d}{i:04d}", since=NOW) for i in range(64)]
            assert all(found is None for found, _ in await asyncio.gather(*asks))

        for n in range(8):  # past the five custom plans, on the one pooled connection a lone caller uses
            await batch_read(n)
        await _grow_sessions(engine, 20_000)
        scanned = await _rows_scanned(engine)
        await batch_read(99)
        assert store.opens.batches == 9 and store.opens.items == 9 * 64
        assert engine.pool.checkedin() == 1  # every statement on one connection: its counts are all there
        assert await _rows_scanned(engine) - scanned < 1000
    finally:
        await engine.dispose()


async def _grow_sessions(engine, n: int, *, truncate: bool = False) -> None:
    """`n` more sessions, as first hops write them."""
    grown = record("grown", state=FIRST_HOP_STATE, last_answer=MAIN_MENU)
    async with engine.begin() as conn:
        if truncate:
            await conn.execute(sa.text("TRUNCATE ussd_sessions"))
        await conn.execute(sa.text(
            "INSERT INTO ussd_sessions (session_id, phone, state, last_text, last_answer, hops, ended, created_at,"
            " updated_at) SELECT 'grown-' || g, '2547' || lpad(g::text, 8, '0'), CAST(:state AS json), '', :answer,"
            " 1, false, now(), now() FROM (SELECT count(*) AS c FROM ussd_sessions) AS had,"
            " generate_series(had.c + 1, had.c + CAST(:n AS int)) g"),
            {"state": json.dumps(grown.state), "answer": grown.last_answer, "n": n})


async def _rows_scanned(engine) -> int:
    """Rows of ussd_sessions read by sequential scans so far. The test's statements all ran on the pool's one
    connection (each caller in turn), whose counts are sent at once when asked to (PostgreSQL >= 15)."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))
        await conn.commit()  # the counts go when the transaction is over
        return (await conn.execute(sa.text(
            "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'ussd_sessions'"))).scalar_one()
