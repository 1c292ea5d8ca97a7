"""Throughput and latency under concurrency, as ratios to a bare Starlette endpoint in the same run.

    make bench            # or: .venv/bin/python -m bench.run [--seconds 5] [--engines sqlite,postgresql]

For each engine (SQLite in a temporary folder; PostgreSQL in a throwaway database on BENCH_POSTGRES_URL,
default the local server) it starts `lipameter serve --no-worker` and a bare Starlette app as separate
processes under the same uvicorn options, the sandboxes (Daraja, Tuya, SMS) in this process, and drives
both with `wrk` at 64 connections. Then `lipameter worker` applies top-ups on 100 sandbox meters whose
every Tuya call takes 100 ms. Each line prints the figure and its goal (issue 12) beside it. Absolute
numbers depend on the machine; the ratios say what our work costs over the web stack itself. This is a
measurement, not a test: nothing asserts, and tests/ never imports it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench import wrk
from bench.seed import add_bench_meters, add_history, add_pending_payments, add_stack_meters, count, run_sql
from storage.db import create_engine
from storage.migrate import upgrade
from tests.servers import ServerThread, reserve_port
from tests.stack import API_KEY, CALLBACK_TOKEN, DARAJA, SMS, TUYA, settings_env
from web.settings import Settings

PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
VENV_BIN = Path(sys.executable).parent
PENDING = 60_000  # distinct pending payments for the callback runs
METERS = 100
TUYA_LATENCY_S = 0.1
DARAJA_LATENCY_S = 0.1


class Sandboxes:
    """Daraja (callbacks held back: the runs measure our answer, not the sandbox's calls), Tuya with a
    per-device request count, SMS; each on its own loopback port."""

    def __init__(self) -> None:
        from sandbox.daraja import create_daraja_sandbox
        from sandbox.sms import create_sms_sandbox
        from sandbox.tuya import create_tuya_sandbox

        daraja_app = create_daraja_sandbox(callback_delay_s=3600, **DARAJA)
        tuya_app, sms_app = create_tuya_sandbox(**TUYA), create_sms_sandbox(**SMS)
        self.daraja, self.tuya = daraja_app.state.daraja, tuya_app.state.tuya
        self.tuya_calls: dict[str, int] = {}
        self.servers = [ServerThread(daraja_app).start(), ServerThread(self._counting(tuya_app)).start(),
                        ServerThread(sms_app).start()]
        self.daraja_url, self.tuya_url, self.sms_url = (server.url for server in self.servers)

    def _counting(self, app):
        async def counted(scope, receive, send):
            parts = scope.get("path", "").split("/") if scope["type"] == "http" else []
            if len(parts) > 3 and parts[2] == "devices":  # /v1.0/devices/{id}/...
                self.tuya_calls[parts[3]] = self.tuya_calls.get(parts[3], 0) + 1
            await app(scope, receive, send)

        return counted

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def settings_for(url: str, sandboxes: Sandboxes, public_url: str, concurrency: int) -> Settings:
    return Settings(
        _env_file=None, database_url=url, public_base_url=public_url, api_keys=API_KEY, callback_token=CALLBACK_TOKEN,
        daraja_base_url=sandboxes.daraja_url, daraja_consumer_key=DARAJA["consumer_key"],
        daraja_consumer_secret=DARAJA["consumer_secret"], daraja_shortcode=DARAJA["shortcode"],
        daraja_passkey=DARAJA["passkey"], tuya_endpoint=sandboxes.tuya_url, tuya_access_id=TUYA["access_id"],
        tuya_access_secret=TUYA["access_secret"], at_username=SMS["username"], at_api_key=SMS["api_key"],
        at_api_base=sandboxes.sms_url, min_amount=10, max_amount=70_000, log_level="WARNING",
        worker_concurrency=concurrency, sweep_every_s=3600,
    )


class Process:
    """A server or worker in its own process (its own interpreter: no GIL shared with the load)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        # Its log goes to a file, never to a pipe nobody reads: once a pipe's 64 KB are full, every log
        # line blocks the server's event loop (it froze the USSD and payment runs at ~20/s and 0/s).
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (open while the server runs)
        self.popen = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=self.log)

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def wait_http(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.popen.args[:3]} exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url, timeout=1)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            time.sleep(0.1)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.popen.terminate()  # SIGTERM: the graceful path
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.log.close()


def serve_commands(port: int, bare_port: int, workers: int) -> tuple[list[str], list[str]]:
    """`lipameter serve` and the bare app under the same uvicorn options (access log off, no proxy headers)."""
    extra = ["--workers", str(workers)] if workers > 1 else []
    ours = [str(VENV_BIN / "lipameter"), "serve", "--no-worker", "--port", str(port), *extra]
    bare = [sys.executable, "-m", "uvicorn", "bench.bare:app", "--host", "127.0.0.1", "--port", str(bare_port),
            "--log-level", "warning", "--no-access-log", "--no-proxy-headers", *extra]
    return ours, bare


class Report:
    def __init__(self, engine: str) -> None:
        self.engine, self.lines = engine, []

    def line(self, label: str, figure: str, goal: str, met: bool | None) -> None:
        mark = {True: "ok", False: "MISSED", None: "--"}[met]
        text = f"  {label:<34} {figure:<58} goal {goal:<26} {mark}"
        self.lines.append(text)
        print(text, flush=True)

    def vs_bare(self, label: str, ours: wrk.Result, bare: wrk.Result, min_ratio: float) -> None:
        ratio, p99x = ours.rate / bare.rate, ours.p99_ms / max(bare.p99_ms, 0.001)
        bad = f", {ours.errors + ours.non2xx} failed" if ours.errors or ours.non2xx else ""
        self.line(label, f"{ours.rate:7.0f}/s p50 {ours.p50_ms:5.0f} ms p99 {ours.p99_ms:5.0f} ms{bad}",
                  "", None)
        self.line("    bare Starlette", f"{bare.rate:7.0f}/s p50 {bare.p50_ms:5.0f} ms p99 {bare.p99_ms:5.0f} ms", "", None)
        self.line("    ratio (throughput)", f"{ratio:.2f}", f">= {min_ratio}", ratio >= min_ratio and not bad)
        self.line("    p99 vs bare", f"{p99x:.1f}x", "<= 3x", p99x <= 3)


def measure(url: str, script: str, seconds: float, offset: int = 0, **fields) -> wrk.Result:
    """A short warm-up (JIT-less Python still warms caches and pools), then the measured run."""
    warm = wrk.run(url, script, seconds=1, offset=offset, **fields)
    return wrk.run(url, script, seconds=seconds, offset=offset + warm.requests + 1000, **fields)


def http_phase(url: str, sandboxes: Sandboxes, report: Report, args) -> wrk.Result:
    """Callbacks, USSD first hops and payment starts; returns the callback run (for the growth run)."""
    port, bare_port = reserve_port(), reserve_port()
    public = f"http://127.0.0.1:{port}"
    env = settings_env(settings_for(url, sandboxes, public, args.concurrency))
    ours_cmd, bare_cmd = serve_commands(port, bare_port, args.workers)
    ours, bare = Process(ours_cmd, env), Process(bare_cmd, env)
    try:
        ours.wait_http(public + "/healthz")
        bare.wait_http(f"http://127.0.0.1:{bare_port}/ack")
        bare_url = f"http://127.0.0.1:{bare_port}"

        body = '{"Body": {"stkCallback": {"CheckoutRequestID": "x", "ResultCode": 0}}}'
        base = measure(bare_url + "/ack", "plain_post", args.seconds, content_type="application/json", body=body)
        calls = measure(f"{public}/mpesa/callback/{CALLBACK_TOKEN}", "callback", args.seconds)
        report.vs_bare("Daraja callback (distinct pending)", calls, base, 0.35)

        form = "sessionId=bare&serviceCode=%2A384%2A1%23&phoneNumber=%2B254712345678&networkCode=63902&text="
        base = measure(bare_url + "/ussd", "plain_post", args.seconds, content_type="application/x-www-form-urlencoded",
                       body=form)
        hops = measure(public + "/ussd", "ussd", args.seconds)
        report.vs_bare("USSD first hop", hops, base, 0.5)
        # Counted once the callbacks still in flight when wrk stopped have landed.
        completed, topups = (count(url, f"SELECT count(*) FROM {table}") for table in
                             ("payments WHERE status = 'completed'", "topups"))
        report.line("    callbacks: completed / top-ups", f"{completed} / {topups}", "one top-up each", completed == topups)

        sandboxes.daraja.slow_next_pushes(1_000_000, DARAJA_LATENCY_S)
        pays = measure(public + "/mpesa/payments", "payment", args.seconds, api_key=API_KEY)
        bad = f", {pays.errors + pays.non2xx} failed" if pays.errors or pays.non2xx else ""
        report.line("Payment start (Daraja 100 ms)", f"{pays.rate:7.0f}/s p50 {pays.p50_ms:5.0f} ms "
                    f"p99 {pays.p99_ms:5.0f} ms{bad}", ">= 200/s per process", pays.rate / args.workers >= 200)
        sandboxes.daraja.reset()
        served = sum(r.requests for r in (calls, hops, pays)) * 2  # the warm-ups are about as long again
        rss = ours.rss_mb()
        report.line("Memory (serving process RSS)", f"{rss:.0f} MB after ~{served:,} requests",
                    "<= 150 MB after 100k", rss <= 150 if args.workers == 1 else None)
    finally:
        ours.stop()
        bare.stop()
    return calls


def topup_phase(url: str, sandboxes: Sandboxes, report: Report, args) -> None:
    """One `lipameter worker`, 100 meters, every Tuya device call slowed to 100 ms; one top-up each."""
    devices = add_bench_meters(url, sandboxes, METERS)
    for device in devices:
        sandboxes.tuya.set_fault(device, "slow", n=None, seconds=TUYA_LATENCY_S)
    settings = settings_for(url, sandboxes, "http://127.0.0.1:9", args.concurrency)
    env = settings_env(settings, **({"TOPUP_POLL_INTERVAL_S": args.poll} if args.poll else {}))
    worker = Process([str(VENV_BIN / "lipameter"), "worker"], env)
    try:
        time.sleep(3)  # let it start (imports, pool); the clock starts when the top-ups are queued
        run_sql(url, "UPDATE jobs SET status = 'done' WHERE kind = 'topup'")  # the callback phase's, on A101
        sandboxes.tuya_calls.clear()
        started = time.monotonic()
        ids = asyncio.run(queue_topups(settings, [f"BM{i:03d}" for i in range(METERS)]))
        query = f"SELECT count(*) FROM topups WHERE status = 'applied' AND id IN ({', '.join(repr(i) for i in ids)})"
        deadline = started + 120
        while count(url, query) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        worker.stop()
    applied = count(url, query)
    rate = applied / elapsed
    report.line("Top-ups, one worker, 100 meters", f"{rate:7.1f}/s ({applied}/{len(ids)} applied in {elapsed:.1f} s, "
                f"{args.concurrency} at once)", ">= 20/s", rate >= 20)
    rows = run_sql(url, f"SELECT applied_at, created_at FROM topups WHERE id IN ({', '.join(repr(i) for i in ids)}) "
                        "AND applied_at IS NOT NULL")
    delays = sorted(_seconds(r.applied_at) - _seconds(r.created_at) for r in rows)
    if delays:
        report.line("    queued -> applied", f"p50 {statistics.median(delays):.2f} s, p95 {percentile(delays, 95):.2f} s",
                    "", None)
    calls = sorted(sandboxes.tuya_calls.get(device, 0) for device in devices)
    report.line("Tuya calls per applied top-up", f"median {statistics.median(calls):.0f}, p95 {percentile(calls, 95):.0f}",
                "reported", None)


async def queue_topups(settings: Settings, numbers: list[str]) -> list[str]:
    from core.admin.operator import Actor, manual_topup
    from web.bootstrap import build_container

    services = build_container(settings)
    try:
        return [(await manual_topup(number, 50, "bench", actor=Actor("bench"), uow=services.uow(),
                                    profiles=services.profiles, clock=services.clock)).id for number in numbers]
    finally:
        await services.aclose()


def growth_phase(url: str, sandboxes: Sandboxes, report: Report, args, small: wrk.Result) -> None:
    """Callbacks again with `--growth` settled payments stored; the ratio to the first callback run."""
    started = time.monotonic()
    add_history(url, args.growth)
    filled = time.monotonic() - started
    port = reserve_port()
    public = f"http://127.0.0.1:{port}"
    ours = Process(serve_commands(port, reserve_port(), args.workers)[0],
                   settings_env(settings_for(url, sandboxes, public, args.concurrency)))
    try:
        ours.wait_http(public + "/healthz")
        big = measure(f"{public}/mpesa/callback/{CALLBACK_TOKEN}", "callback", args.seconds, offset=PENDING // 2)
    finally:
        ours.stop()
    ratio = big.rate / small.rate
    report.line(f"Growth: callbacks, +{args.growth:,} rows", f"{big.rate:7.0f}/s, {ratio:.2f} of the small table "
                f"(rows written in {filled:.0f} s)", ">= 0.9", ratio >= 0.9)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def _seconds(value) -> float:
    """A timestamp read back with plain SQL: a datetime (PostgreSQL) or its text (SQLite)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None).timestamp() if value.tzinfo is None else value.timestamp()


@contextlib.contextmanager
def database(engine: str) -> Iterator[str]:
    if engine == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite+aiosqlite:///{folder}/bench.db"
        return
    name = f"lipameter_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = PG_ADMIN_URL
    asyncio.run(_autocommit(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_autocommit(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _autocommit(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(sa.text(statement))
    finally:
        await engine.dispose()


def bench_engine(engine: str, args) -> Report:
    report = Report(engine)
    with database(engine) as url:
        print(f"\n{engine}: {wrk.CONNECTIONS} connections, {args.seconds:.0f} s a run, "
              f"{args.workers} serve process(es)", flush=True)
        upgrade(url)
        sandboxes = Sandboxes()
        try:
            add_stack_meters(url, sandboxes)  # A101, B201, OFF1 and the tenant Wanjiku, as the tests have them
            add_pending_payments(url, PENDING, amount=100)
            callbacks = http_phase(url, sandboxes, report, args)
            topup_phase(url, sandboxes, report, args)
            if args.growth:
                growth_phase(url, sandboxes, report, args, callbacks)
        finally:
            sandboxes.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="length of each measured wrk run")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=1, help="serve processes (lipameter serve --workers)")
    parser.add_argument("--concurrency", type=int, default=16, help="WORKER_CONCURRENCY for the top-up run")
    parser.add_argument("--poll", type=float, default=None, help="TOPUP_POLL_INTERVAL_S for the top-up run "
                        "(default: the product's)")
    parser.add_argument("--growth", type=int, default=0, help="also measure callbacks with this many more rows")
    args = parser.parse_args()
    if not wrk.available():
        sys.exit("bench needs wrk (Debian/Ubuntu: apt-get install wrk)")
    reports = [bench_engine(engine, args) for engine in args.engines.split(",")]
    print("\nsummary")
    for report in reports:
        print(report.engine)
        print("\n".join(report.lines))


if __name__ == "__main__":
    main()
