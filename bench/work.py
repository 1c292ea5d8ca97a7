"""Work per request, which a busy machine does not change: SQL statements and round trips, and the event
loop's CPU time, for a callback, a USSD first hop and a payment start; then the payment start's
concurrency (64 at once against Daraja answering in 100 ms: do they overlap or queue?).

    .venv/bin/python -m bench.work [--engines sqlite,postgresql] [--requests 300] [--profile callback]

The app runs in this process behind httpx's ASGI transport (no sockets, no uvicorn: what is left is our
own work); the sandboxes run on loopback threads as in `make bench`. CPU time is the event loop thread's
(`time.thread_time`), so the sandbox threads and aiosqlite's driver thread do not count; the bare
Starlette endpoint through the same transport is printed beside it as the floor. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from contextlib import contextmanager

import httpx
import sqlalchemy as sa

from bench.bare import app as bare_app
from bench.run import DARAJA_LATENCY_S, PENDING, Sandboxes, database, settings_for
from bench.seed import add_pending_payments, add_stack_meters
from storage.db import ONE_STATEMENT
from storage.migrate import upgrade
from tests.stack import API_KEY, CALLBACK_TOKEN
from web.app import create_app
from web.bootstrap import build_container


class Counter:
    """Statements (cursor executions) and round trips (those plus BEGIN, COMMIT, ROLLBACK)."""

    def __init__(self, engine) -> None:
        self.statements = self.round_trips = 0
        self.sql: dict[str, int] = {}
        sync = engine.sync_engine
        sa.event.listen(sync, "before_cursor_execute", self._statement)
        if engine.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE is a cursor execution (storage/db.py)
            sa.event.listen(sync, "begin", self._transaction)
        for name in ("commit", "rollback"):
            sa.event.listen(sync, name, self._transaction)

    def _statement(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements += 1
        self.round_trips += 1
        key = " ".join(statement.split())[:110]
        self.sql[key] = self.sql.get(key, 0) + 1

    def _transaction(self, conn) -> None:
        options = conn.get_execution_options()
        if options.get("isolation_level") != "AUTOCOMMIT" and not options.get(ONE_STATEMENT):  # else nothing is sent
            self.round_trips += 1

    def reset(self) -> None:
        self.statements = self.round_trips = 0
        self.sql.clear()


def callback_body(n: int) -> bytes:
    return (f'{{"Body": {{"stkCallback": {{"MerchantRequestID": "1-1-1", "CheckoutRequestID": "ws_CO_bench_{n}", '
            f'"ResultCode": 0, "ResultDesc": "The service request is processed successfully.", "CallbackMetadata": '
            f'{{"Item": [{{"Name": "Amount", "Value": 100.0}}, {{"Name": "MpesaReceiptNumber", "Value": "BEN{n:07d}"}}, '
            f'{{"Name": "TransactionDate", "Value": 20261127101500}}, {{"Name": "PhoneNumber", "Value": 254700000000}}]}}'
            f'}}}}}}').encode()


def requests_for(path: str):
    """(method, url, keyword arguments) for request number n of a path."""
    if path == "callback":
        return lambda n: ("POST", f"/mpesa/callback/{CALLBACK_TOKEN}",
                          dict(content=callback_body(n), headers={"content-type": "application/json"}))
    if path == "ussd":
        return lambda n: ("POST", "/ussd", dict(data={"sessionId": f"work-{n}", "serviceCode": "*384*1#",
                                                      "phoneNumber": f"+2547{n:08d}", "networkCode": "63902",
                                                      "text": ""}))
    if path == "payment":
        return lambda n: ("POST", "/mpesa/payments", dict(
            json={"amount": 100, "phoneNumber": f"2547{n:08d}", "meterId": "A101", "description": "bench"},
            headers={"authorization": f"Bearer {API_KEY}"}))
    if path == "bare":
        return lambda n: ("POST", "/ack", dict(content=b'{"a": 1}', headers={"content-type": "application/json"}))
    raise ValueError(path)


@contextmanager
def profiled(enabled: bool, label: str):
    profile = cProfile.Profile() if enabled else None
    if profile:
        profile.enable()
    try:
        yield
    finally:
        if profile:
            profile.disable()
            print(f"\n--- profile: {label} (by own time, then cumulative)")
            profile.dump_stats(f"/tmp/bench-work-{label}.prof")
            stats = pstats.Stats(profile)
            by_package: dict[str, float] = {}
            for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
                by_package[_package(filename)] = by_package.get(_package(filename), 0.0) + tottime
            total = sum(by_package.values())
            for package, seconds in sorted(by_package.items(), key=lambda item: -item[1])[:14]:
                print(f"  {package:<28} {100 * seconds / total:5.1f}%")
            stats.strip_dirs().sort_stats("tottime").print_stats(30)


def _package(filename: str) -> str:
    """The top package a profiled function belongs to (site-packages' first folder, or ours)."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/work/" in filename:
        parts = filename.split("/")
        return "ours: " + parts[parts.index("perf") + 1] if "perf" in parts else filename
    if filename.startswith("<") or filename == "~":
        return "builtins"
    return "stdlib: " + filename.rsplit("/", 1)[-1]


async def sequential(client: httpx.AsyncClient, path: str, first: int, n: int, profile: bool) -> float:
    """Loop-thread CPU ms per request, requests one at a time."""
    make = requests_for(path)
    for k in range(20):  # warm caches, pools and the compiled-statement cache
        method, url, kw = make(first + n + k)
        await client.request(method, url, **kw)
    cpu = time.thread_time()
    with profiled(profile, path):
        for k in range(n):
            method, url, kw = make(first + k)
            response = await client.request(method, url, **kw)
            if response.status_code >= 300:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    return (time.thread_time() - cpu) * 1000 / n


async def at_once(client: httpx.AsyncClient, path: str, first: int, n: int) -> tuple[float, int]:
    """n requests started together: (wall seconds, failed)."""
    make = requests_for(path)

    async def one(k: int) -> int:
        method, url, kw = make(first + k)
        return (await client.request(method, url, **kw)).status_code

    started = time.monotonic()
    codes = await asyncio.gather(*(one(k) for k in range(n)))
    return time.monotonic() - started, sum(code >= 300 for code in codes)


async def measure_engine(url: str, sandboxes: Sandboxes, args) -> list[str]:
    settings = settings_for(url, sandboxes, "http://127.0.0.1:9", 16)
    container = build_container(settings)
    counter = Counter(container.engine)
    app = create_app(container, run_worker=False)
    lines = []
    transport, bare_transport = httpx.ASGITransport(app=app), httpx.ASGITransport(app=bare_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client, \
            httpx.AsyncClient(transport=bare_transport, base_url="http://test") as bare:
        floor = await sequential(bare, "bare", 0, args.requests, False)
        lines.append(f"  bare Starlette (same transport)       {floor:6.2f} ms CPU/request")
        first = {"callback": 1000, "ussd": 0, "payment": 1_000_000}
        for path in ("callback", "ussd", "payment"):
            if path == "payment":
                sandboxes.daraja.slow_next_pushes(0, 0)
            await sequential(client, path, first[path] + 100_000, 1, False)  # first call: token, pools
            counter.reset()
            cpu = await sequential(client, path, first[path], args.requests, args.profile == path)
            per = args.requests + 20
            lines.append(f"  {path:<36} {cpu:6.2f} ms CPU/request  {counter.statements / per:5.2f} statements  "
                         f"{counter.round_trips / per:5.2f} round trips")
            if args.sql:
                for sql, k in sorted(counter.sql.items(), key=lambda item: -item[1]):
                    lines.append(f"      {k / per:5.2f}  {sql}")
        sandboxes.daraja.slow_next_pushes(1_000_000, DARAJA_LATENCY_S)
        wall, failed = await at_once(client, "payment", 2_000_000, 64)
        sandboxes.daraja.reset()
        lines.append(f"  64 payment starts at once, Daraja {DARAJA_LATENCY_S * 1000:.0f} ms: {wall:.2f} s "
                     f"({64 / wall:.0f}/s), {failed} failed")
    await container.aclose()
    return lines


def run(coroutine, loop: str):
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--profile", choices=["callback", "ussd", "payment"], help="print a cProfile of this path")
    parser.add_argument("--sql", action="store_true", help="list the statements per request")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop",
                        help="the event loop (lipameter serve uses uvloop where it is installed)")
    args = parser.parse_args()
    for engine in args.engines.split(","):
        with database(engine) as url:
            upgrade(url)
            sandboxes = Sandboxes()
            try:
                add_stack_meters(url, sandboxes)
                add_pending_payments(url, min(PENDING, 10_000), amount=100)
                lines = run(measure_engine(url, sandboxes, args), args.loop)
            finally:
                sandboxes.stop()
        print(engine)
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
