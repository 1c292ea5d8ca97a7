"""Rows for the bench, written with one SQL statement where the database can generate them."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from storage.db import create_engine, is_sqlite, one_statement

PAYMENT_COLUMNS = ("id, amount, phone, meter_id, channel, description, status, checkout_request_id, "
                   "created_at, updated_at")


def run_sql(url: str, query: str, *, autocommit: bool = False, **params) -> list:
    """`query`'s rows, committed; with `autocommit`, outside any transaction (CREATE DATABASE, VACUUM,
    CHECKPOINT, SQLite's PRAGMAs)."""
    async def go():
        engine = create_engine(url)
        try:
            async with (one_statement(engine) if autocommit else engine.connect()) as conn:
                result = await conn.execute(sa.text(query), params)
                rows = list(result) if result.returns_rows else []
                if not autocommit:
                    await conn.commit()
                return rows
        finally:
            await engine.dispose()

    return asyncio.run(go())


def settle(url: str) -> None:
    """After a bulk load, what a running database does by itself before anyone measures it: on PostgreSQL a
    vacuum (visibility map, hint bits) and a checkpoint, on SQLite a WAL checkpoint. Without it the bulk load's
    own deferred writes land inside the next measured run: the bench machines run PostgreSQL with autovacuum
    off, and a million fresh rows then cost their first readers the hint-bit writes and the checkpoint's I/O."""
    if is_sqlite(url):
        run_sql(url, "PRAGMA wal_checkpoint(TRUNCATE)", autocommit=True)
        return
    run_sql(url, "VACUUM (ANALYZE) payments", autocommit=True)
    run_sql(url, "CHECKPOINT", autocommit=True)


def count(url: str, query: str) -> int:
    return run_sql(url, query)[0][0]


def wait_for_count(url: str, query: str, target: int, *, timeout_s: float, every_s: float = 0.05) -> None:
    """Until `query` (a count) reaches `target` or `timeout_s` passes, polled on one connection: an engine
    made per poll cost ~8 ms of this process's CPU each time, and this process also serves the sandboxes
    whose answers the run is waiting for."""
    async def go():
        engine = create_engine(url)
        deadline = time.monotonic() + timeout_s
        try:
            async with engine.connect() as conn:
                while (await conn.scalar(sa.text(query))) < target and time.monotonic() < deadline:
                    await conn.rollback()  # the next poll reads afresh
                    await asyncio.sleep(every_s)
        finally:
            await engine.dispose()

    asyncio.run(go())


def _numbers(url: str, n: int, start: int = 0) -> tuple[str, str, str]:
    """(row source, the number as text, zero-padded to 8) for n generated rows."""
    if is_sqlite(url):
        return (f"(WITH RECURSIVE g(n) AS (SELECT {start} UNION ALL SELECT n + 1 FROM g WHERE n < {start + n - 1}) "
                "SELECT n FROM g) AS g", "CAST(g.n AS TEXT)", "printf('%08d', g.n)")
    return f"generate_series({start}, {start + n - 1}) AS g(n)", "g.n::text", "lpad(g.n::text, 8, '0')"


def add_pending_payments(url: str, n: int, *, amount: int) -> None:
    """n pending payments on A101 with CheckoutRequestIDs ws_CO_bench_<i>, as if their pushes were accepted."""
    source, text, padded = _numbers(url, n)
    run_sql(url, f"INSERT INTO payments ({PAYMENT_COLUMNS}) SELECT 'bench-' || {text}, {amount}, '2541' || {padded}, "
                 f"(SELECT id FROM meters WHERE number = 'A101'), 'api', '', 'pending', 'ws_CO_bench_' || {text}, "
                 f"CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM {source}")


def add_meter_payments(url: str, meters: list[str], *, prefix: str, amount: int = 100) -> None:
    """One pending payment per entry of `meters` (a meter number), ids <prefix>-<i>, CheckoutRequestIDs
    ws_CO_<prefix>_<i>, each from its own Safaricom line (25419..., apart from add_pending_payments' 25410...)."""
    values = ", ".join(f"('{prefix}-{i}', {amount}, '25419{i:07d}', (SELECT id FROM meters WHERE number = '{number}'), "
                       f"'api', '', 'pending', 'ws_CO_{prefix}_{i}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                       for i, number in enumerate(meters))
    run_sql(url, f"INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES {values}")


def add_ussd_sessions(url: str, n: int, *, like: str) -> None:
    """n stored USSD sessions next-<i>, each from its own phone 2547<i, 8 digits>, copies of session `like`
    (a first hop's, at the menu): what `wrk.SCRIPTS["ussd_next"]` goes on from."""
    source, text, padded = _numbers(url, n)
    columns = "service_code, network_code, state, last_text, last_answer, hops, ended, created_at, updated_at"
    run_sql(url, f"INSERT INTO ussd_sessions (session_id, phone, {columns}) SELECT 'next-' || {text}, "
                 f"'2547' || {padded}, {columns} FROM ussd_sessions, {source} WHERE session_id = :like", like=like)
    if not is_sqlite(url):
        run_sql(url, "ANALYZE ussd_sessions")


def add_history(url: str, n: int) -> None:
    """n settled (failed) payments: a grown table that the hot paths must not scan."""
    source, text, padded = _numbers(url, n, start=10_000_000)
    run_sql(url, f"INSERT INTO payments ({PAYMENT_COLUMNS}) SELECT 'hist-' || {text}, 100, '2542' || {padded}, "
                 f"(SELECT id FROM meters WHERE number = 'A101'), 'api', '', 'failed', 'ws_CO_hist_' || {text}, "
                 f"CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM {source}")
    if not is_sqlite(url):
        run_sql(url, "ANALYZE payments")


def add_bench_meters(url: str, sandboxes, n: int) -> list[str]:
    """n seed-profile meters BM000.. on sandbox devices dev-bm000..; returns the device ids."""
    from core.admin.registry import AddMeter, register_meter
    from core.meters.profiles import BUILTIN_PROFILES
    from gateways.tuya import TuyaMeterGateway
    from storage.uow import SqlUnitOfWork
    from tests.stack import TUYA

    devices = [f"dev-bm{i:03d}" for i in range(n)]
    for device in devices:
        sandboxes.tuya.add_device(device, "seed", balance="0", price="25")
    gateway = TuyaMeterGateway(sandboxes.tuya_url, TUYA["access_id"], TUYA["access_secret"], timeout_s=5)

    async def go():
        engine = create_engine(url)
        try:
            for i, device in enumerate(devices):
                await register_meter(AddMeter(number=f"BM{i:03d}", name=f"Bench {i}", device_id=device,
                                              price_per_kwh="25"), uow=SqlUnitOfWork(engine), meters=gateway,
                                     profiles=BUILTIN_PROFILES)
        finally:
            await engine.dispose()
            gateway.close()

    asyncio.run(go())
    return devices


def add_stack_meters(url: str, sandboxes) -> None:
    """A101, B201, OFF1 and the tenant Wanjiku, as tests/stack.py's `add_meters` gives a Stack."""
    from types import SimpleNamespace

    from tests.stack import TUYA, add_meters
    from web.settings import Settings

    add_meters(SimpleNamespace(tuya=sandboxes.tuya, settings=Settings(
        _env_file=None, database_url=url, tuya_endpoint=sandboxes.tuya_url, tuya_access_id=TUYA["access_id"],
        tuya_access_secret=TUYA["access_secret"])))
