"""Throughput and latency under concurrency, as ratios to a bare Starlette endpoint in the same run.

    make bench            # or: .venv/bin/python -m bench.run [--seconds 3] [--engines sqlite,postgresql]

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
import dataclasses
import math
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

from bench import wrk
from bench.seed import (
    add_bench_meters,
    add_history,
    add_meter_payments,
    add_pending_payments,
    add_stack_meters,
    add_ussd_sessions,
    count,
    run_sql,
    settle,
    wait_for_count,
)
from storage.migrate import upgrade
from tests.servers import ServerThread, reserve_port
from tests.stack import API_KEY, CALLBACK_TOKEN, DARAJA, SMS, TUYA, settings_env
from web.settings import Settings

PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
VENV_BIN = Path(sys.executable).parent
# Distinct pending payments for the callback runs (the growth run uses the second half): a warm-up and five
# 3 s rounds at up to ~9,000 callbacks/s each. At 160,000, a machine answering ~5,600/s ran past the first half
# into the growth run's, and past the end (those callbacks were duplicates or orphans).
PENDING = 340_000
ROUNDS = 5  # bare and ours measured in turns, the round of median ratio kept: a shared machine's speed drifts
METERS = 100
TUYA_LATENCY_S = 0.1
DARAJA_LATENCY_S = 0.1
PACE_SECONDS = 3  # the bare endpoint's run before and after a drain


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
    ours = [str(VENV_BIN / "lipameter"), "serve", "--no-worker", "--port", str(port), *_workers_option(workers)]
    return ours, bare_command(bare_port, workers)


def bare_command(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "bench.bare:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log", "--no-proxy-headers", *_workers_option(workers)]


def _workers_option(workers: int) -> list[str]:
    return ["--workers", str(workers)] if workers > 1 else []


class Report:
    def __init__(self, engine: str) -> None:
        self.engine, self.lines = engine, []

    def line(self, label: str, figure: str, goal: str, met: bool | None) -> None:
        mark = {True: "ok", False: "MISSED", None: "--"}[met]
        text = f"  {label:<34} {figure:<58} goal {goal:<26} {mark}"
        self.lines.append(text)
        print(text, flush=True)

    def vs_bare(self, label: str, turns: Turns, min_ratio: float) -> None:
        ours, bare, ratio = turns.ours, turns.bare, turns.ratio
        p99x = ours.p99_ms / max(bare.p99_ms, 0.001)
        bad = f", {ours.errors + ours.non2xx} failed" if ours.errors or ours.non2xx else ""
        self.line(label, f"{ours.rate:7.0f}/s p50 {ours.p50_ms:5.0f} ms p99 {ours.p99_ms:5.0f} ms{bad}",
                  "", None)
        self.line("    bare Starlette", f"{bare.rate:7.0f}/s p50 {bare.p50_ms:5.0f} ms p99 {bare.p99_ms:5.0f} ms", "", None)
        # Two decimals, cut rather than rounded: 0.4986 of bare misses 0.5, and must not print as 0.50.
        rounds = " ".join(f"{r:.2f}" for r in turns.ratios)
        self.line("    ratio (throughput)", f"{math.floor(ratio * 100) / 100:.2f} (the median of its rounds: {rounds})",
                  f">= {min_ratio}", ratio >= min_ratio and not bad)
        self.line("    p99 vs bare", f"{p99x:.1f}x", "<= 3x", p99x <= 3)


def measure(url: str, script: str, seconds: float, offset: int = 0, **fields) -> wrk.Result:
    """A short warm-up (JIT-less Python still warms caches and pools), then the measured run."""
    warm = wrk.run(url, script, seconds=1, offset=offset, **fields)
    return wrk.run(url, script, seconds=seconds, offset=offset + warm.requests + 1000, **fields)


@dataclasses.dataclass(frozen=True)
class Turns:
    """Ours and bare measured in turns: the round whose ratio is the median, and every round's ratio."""

    ours: wrk.Result
    bare: wrk.Result
    ratios: list[float]

    @property
    def ratio(self) -> float:
        return self.ours.rate / self.bare.rate


def in_turns(ours: tuple[str, str, dict], bare: tuple[str, str, dict], seconds: float, offset: int = 0) -> Turns:
    """ROUNDS rounds, each a run of ours then one of bare (url, wrk script, its fields), after one warm-up
    each; returns the round whose ratio (ours / bare, two runs seconds apart) is the median. Measured one
    after the other, a few seconds apart, the machine's speed (shared cores, other tenants of the host)
    moved a single ratio by ±30% from one run to the next; a ratio of the median rate of each side paired
    runs minutes apart, and swung 0.41-0.59 for the same code on one machine. `offset`: the first request
    number (the callback runs number distinct pending payments from it); only our requests use up numbers
    (bare's requests are all alike)."""
    next_id = offset
    runs: tuple[list[wrk.Result], list[wrk.Result]] = ([], [])
    for turn in range(ROUNDS + 1):  # a one-second warm-up, then the rounds
        for side, (url, script, fields) in enumerate((ours, bare)):
            result = wrk.run(url, script, seconds=seconds if turn else 1, offset=next_id, **fields)
            if side == 0:
                next_id += result.requests + 1000
            if turn:
                runs[side].append(result)
    ratios = [o.rate / b.rate for o, b in zip(*runs, strict=True)]
    middle = sorted(range(ROUNDS), key=ratios.__getitem__)[ROUNDS // 2]
    return Turns(ours=runs[0][middle], bare=runs[1][middle], ratios=ratios)


def http_phase(url: str, sandboxes: Sandboxes, report: Report, args) -> float:
    """Callbacks, USSD first hops and payment starts; returns the callbacks' ratio to bare (for the growth run)."""
    port, bare_port = reserve_port(), reserve_port()
    public = f"http://127.0.0.1:{port}"
    env = settings_env(settings_for(url, sandboxes, public, args.concurrency))
    ours_cmd, bare_cmd = serve_commands(port, bare_port, args.workers)
    ours, bare = Process(ours_cmd, env), Process(bare_cmd, env)
    try:
        ours.wait_http(public + "/healthz")
        bare.wait_http(f"http://127.0.0.1:{bare_port}/ack")
        bare_url = f"http://127.0.0.1:{bare_port}"

        calls = callbacks_in_turns(public, bare_url, args.seconds)
        report.vs_bare("Callback ingestion (kept, answered)", calls, 0.35)
        hops = in_turns((public + "/ussd", "ussd", {}), (bare_url + "/ussd", "plain_post", BARE_USSD), args.seconds)
        report.vs_bare("USSD first hop", hops, 0.5)
        nexts = next_hops_in_turns(url, public, bare_url, args.seconds)
        report.vs_bare("USSD next hop (stored session)", nexts, 0.5)
        base = nexts.bare

        sandboxes.daraja.slow_next_pushes(1_000_000, DARAJA_LATENCY_S)
        pays = measure(public + "/mpesa/payments", "payment", args.seconds, api_key=API_KEY)
        bad = f", {pays.errors + pays.non2xx} failed" if pays.errors or pays.non2xx else ""
        report.line("Payment start (Daraja 100 ms)", f"{pays.rate:7.0f}/s p50 {pays.p50_ms:5.0f} ms "
                    f"p99 {pays.p99_ms:5.0f} ms{bad}", ">= 200/s per process", pays.rate / args.workers >= 200)
        # An absolute goal: how fast this machine is decides much of it. Bare's pace, for comparing runs.
        report.line("    per 1,000 bare requests", f"{1000 * pays.rate / base.rate:7.1f} (bare {base.rate:.0f}/s, "
                    "its USSD run above)", "", None)
        sandboxes.daraja.reset()
        served = sum(t.ours.requests for t in (calls, hops, nexts)) * (ROUNDS + 1) + pays.requests * 2  # with the warm-ups
        served += soak(url, public, SOAK_REQUESTS - served)
        rss = ours.rss_mb()
        report.line("Memory (serving process RSS)", f"{rss:.0f} MB after ~{served:,} requests",
                    "<= 150 MB after 100k", rss <= 150 if args.workers == 1 else None)
    finally:
        ours.stop()
        bare.stop()
    return calls.ratio


BARE_USSD = {"content_type": "application/x-www-form-urlencoded",  # wrk's plain_post fields for bare's /ussd
             "body": "sessionId=bare&serviceCode=%2A384%2A1%23&phoneNumber=%2B254712345678&networkCode=63902&text="}
STORED_SESSIONS = 150_000  # for the next-hop runs: a warm-up and five 3 s rounds at up to ~9,000 hops/s


def next_hops_in_turns(url: str, public: str, bare_url: str, seconds: float) -> Turns:
    """Second hops (`1`: Buy electricity) on stored sessions, each from its own phone, and bare's USSD
    endpoint, in turns. The sessions are copies of one first hop's, written with SQL."""
    httpx.post(public + "/ussd", data={"sessionId": "next-template", "phoneNumber": "+254700000000", "text": "",
                                       "serviceCode": "*384*1#", "networkCode": "63902"}).raise_for_status()
    add_ussd_sessions(url, STORED_SESSIONS, like="next-template")
    nexts = in_turns((public + "/ussd", "ussd_next", {}), (bare_url + "/ussd", "plain_post", BARE_USSD), seconds)
    if (ROUNDS + 1) * (nexts.ours.requests + 1000) > STORED_SESSIONS:
        print(f"  (next hops may have run past the {STORED_SESSIONS:,} stored sessions: raise STORED_SESSIONS)")
    return nexts


CALLBACK_BODY = '{"Body": {"stkCallback": {"CheckoutRequestID": "x", "ResultCode": 0}}}'
BARE_ACK = {"content_type": "application/json", "body": CALLBACK_BODY}  # wrk's plain_post fields for bare's /ack


def callbacks_in_turns(public: str, bare_url: str, seconds: float, offset: int = 0) -> Turns:
    """Our callback endpoint (distinct pending payments from `offset`) and bare's, measured in turns."""
    calls = in_turns((f"{public}/mpesa/callback/{CALLBACK_TOKEN}", "callback", {}),
                     (bare_url + "/ack", "plain_post", BARE_ACK), seconds, offset=offset)
    if (ROUNDS + 1) * (calls.ours.requests + 1000) > PENDING // 2:
        print(f"  (callbacks may have run past their {PENDING // 2:,} pending payments: raise PENDING)")
    return calls


SOAK_REQUESTS = 100_000
SOAK_OFFSET = 50_000_000  # CheckoutRequestIDs no payment has: the soak's callbacks are orphans


def soak(url: str, public: str, missing: int) -> int:
    """More callbacks until the serving process has answered SOAK_REQUESTS (its memory after them is the
    goal). They name no payment; their kept rows are removed after, so the drain measures the real ones."""
    if missing <= 0:
        return 0
    before = count(url, "SELECT coalesce(max(id), 0) FROM mpesa_callbacks")
    served = 0
    while served < missing:
        served += wrk.run(f"{public}/mpesa/callback/{CALLBACK_TOKEN}", "callback", seconds=10,
                          offset=SOAK_OFFSET + served).requests
    run_sql(url, f"DELETE FROM mpesa_callbacks WHERE id > {before} AND outcome = 'received'")
    return served


def drain_phase(url: str, sandboxes: Sandboxes, report: Report, args, label: str = "Inbox drain") -> float:
    """The callbacks the rush left `received`, applied by one process's drain (what a worker runs:
    `apply_received_callbacks`, 4 at once, two drains side by side). Returns callbacks applied per second
    over the bare endpoint's requests per second measured just before and just after (the machine's pace:
    the growth run's drain, minutes later, is compared by this ratio, not by its absolute rate)."""
    waiting = count(url, "SELECT count(*) FROM mpesa_callbacks WHERE outcome = 'received'")
    settings = settings_for(url, sandboxes, "http://127.0.0.1:9", args.concurrency)
    with bare_pace(args) as pace:
        started = time.monotonic()
        asyncio.run(drain_all(settings))
        elapsed = time.monotonic() - started
    left = count(url, "SELECT count(*) FROM mpesa_callbacks WHERE outcome = 'received'")
    rate = (waiting - left) / elapsed if elapsed else 0.0
    report.line(f"{label}, one process", f"{waiting - left:,} applied in {elapsed:.1f} s ({rate:.0f}/s), {left} left",
                "reported", None if not left else False)
    report.line("    bare Starlette, around it", f"{pace.rate:7.0f}/s (before {pace.before:.0f}, after {pace.after:.0f})",
                "", None)
    completed, made = (count(url, f"SELECT count(*) FROM {table}") for table in
                       ("payments WHERE status = 'completed'", "topups WHERE payment_id IS NOT NULL"))
    report.line("    payments completed / top-ups", f"{completed:,} / {made:,}", "one top-up each", completed == made)
    return rate / pace.rate


@dataclasses.dataclass
class Pace:
    before: float = 0.0
    after: float = 0.0

    @property
    def rate(self) -> float:
        return (self.before + self.after) / 2


@contextlib.contextmanager
def bare_pace(args) -> Iterator[Pace]:
    """The bare endpoint's requests per second just before and just after the block (PACE_SECONDS each)."""
    port = reserve_port()
    bare = Process(bare_command(port, args.workers), os.environ.copy())
    url = f"http://127.0.0.1:{port}/ack"
    pace = Pace()
    try:
        bare.wait_http(url)
        wrk.run(url, "plain_post", seconds=1, **BARE_ACK)  # warm-up
        pace.before = wrk.run(url, "plain_post", seconds=PACE_SECONDS, **BARE_ACK).rate
        yield pace
        pace.after = wrk.run(url, "plain_post", seconds=PACE_SECONDS, **BARE_ACK).rate
    finally:
        bare.stop()


async def drain_all(settings: Settings) -> None:
    from core.payments.service import apply_received_callbacks
    from web.bootstrap import build_container

    services = build_container(settings)

    async def drain() -> None:
        while await apply_received_callbacks(services.uow, clock=services.clock, verify=settings.verify_callbacks,
                                             limit=64):
            pass

    try:
        await asyncio.gather(drain(), drain())
    finally:
        await services.aclose()


# The callback runs leave their unanswered payments pending (the growth run answers the second half). The
# top-up and receipt phases measure top-ups: their workers' sweep does not reconcile those (it queried
# Daraja for 100 of them, one after another, at each start, beside the measured top-ups).
PARKED = {"reconcile_after_s": 86_400}


def topup_phase(url: str, sandboxes: Sandboxes, report: Report, args) -> None:
    """One `lipameter worker`, 100 meters, every Tuya device call slowed to 100 ms; one top-up each, queued
    before the worker starts (the backlog a restart or a rush leaves). The clock runs from the worker's first
    heartbeat (written just before its first claim) to the last top-up applied, both the worker's own
    timestamps: the worker's rate, not this process's. Top-ups arriving while a worker runs are the receipt
    phase's (`latency_phase`)."""
    devices = add_bench_meters(url, sandboxes, METERS)
    for device in devices:
        sandboxes.tuya.set_fault(device, "slow", n=None, seconds=TUYA_LATENCY_S)
    settings = settings_for(url, sandboxes, "http://127.0.0.1:9", args.concurrency)
    env = settings_env(settings, **PARKED, **({"TOPUP_POLL_INTERVAL_S": args.poll} if args.poll else {}))
    # The drain's top-ups (all on A101) are not this run's: done before the worker can claim them (once it
    # had, they went on being retried behind A101's one top-up at a time, beside the 100 measured ones).
    run_sql(url, "UPDATE jobs SET status = 'done' WHERE kind = 'topup'")
    ids = asyncio.run(queue_topups(settings, [f"BM{i:03d}" for i in range(METERS)]))
    listed = ", ".join(repr(i) for i in ids)
    query = f"SELECT count(*) FROM topups WHERE status = 'applied' AND id IN ({listed})"
    sandboxes.tuya_calls.clear()
    worker = Process([str(VENV_BIN / "lipameter"), "worker"], env)
    try:
        wait_for_count(url, query, len(ids), timeout_s=120)
    finally:
        worker.stop()
    applied = count(url, query)
    [(up,)] = run_sql(url, "SELECT started_at FROM worker_heartbeats WHERE worker_id LIKE :pid",
                      pid=f"%:{worker.popen.pid}")
    done = [_seconds(r.applied_at) - _seconds(up) for r in run_sql(
        url, f"SELECT applied_at FROM topups WHERE id IN ({listed}) AND applied_at IS NOT NULL")]
    elapsed = max(done, default=float("nan"))
    rate = applied / elapsed if done else 0.0
    report.line("Top-ups, one worker, 100 meters", f"{rate:7.1f}/s ({applied}/{len(ids)} applied in {elapsed:.1f} s, "
                f"{args.concurrency} at once)", ">= 20/s", rate >= 20)
    if done:
        done.sort()
        report.line("    worker up -> applied", f"p50 {statistics.median(done):.2f} s, p95 {percentile(done, 95):.2f} s",
                    "", None)
    calls = sorted(sandboxes.tuya_calls.get(device, 0) for device in devices)
    report.line("Tuya calls per applied top-up", f"median {statistics.median(calls):.0f}, p95 {percentile(calls, 95):.0f}",
                "reported", None)


LATENCY_RATE = 20  # payments a second
LATENCY_SECONDS = 10


def latency_phase(url: str, sandboxes: Sandboxes, report: Report, args) -> None:
    """Callback -> meter credited -> receipt sent, at 20 payments/s for 10 s, through `lipameter serve` with
    its worker (the one-process deployment), on the 100 meters whose every Tuya call takes 100 ms."""
    n = LATENCY_RATE * LATENCY_SECONDS
    run_sql(url, "UPDATE jobs SET status = 'done' WHERE status IN ('queued', 'running')")  # earlier phases' leftovers
    add_meter_payments(url, [f"BM{i % METERS:03d}" for i in range(n)], prefix="lat")
    port = reserve_port()
    public = f"http://127.0.0.1:{port}"
    env = settings_env(settings_for(url, sandboxes, public, args.concurrency), **PARKED,
                       **({"TOPUP_POLL_INTERVAL_S": args.poll} if args.poll else {}))
    ours = Process([str(VENV_BIN / "lipameter"), "serve", "--port", str(port)], env)
    try:
        ours.wait_http(public + "/healthz")
        sent = asyncio.run(send_callbacks_at_rate(f"{public}/mpesa/callback/{CALLBACK_TOKEN}", n, LATENCY_RATE))
        query = ("SELECT count(*) FROM notifications WHERE status = 'sent' AND event = 'topup_applied' "
                 "AND payment_id LIKE 'lat-%'")
        wait_for_count(url, query, n, timeout_s=60, every_s=0.2)
    finally:
        ours.stop()
    rows = run_sql(url, "SELECT p.checkout_request_id, t.applied_at, min(n.at) AS told FROM payments p "
                        "JOIN topups t ON t.payment_id = p.id LEFT JOIN notifications n ON n.payment_id = p.id "
                        "AND n.status = 'sent' AND n.event = 'topup_applied' WHERE p.id LIKE 'lat-%' "
                        "GROUP BY p.checkout_request_id, t.applied_at")
    credited = sorted(_seconds(r.applied_at) - sent[r.checkout_request_id] for r in rows if r.applied_at)
    told = sorted(_seconds(r.told) - sent[r.checkout_request_id] for r in rows if r.told)
    late = f"p50 {statistics.median(told):.2f} s, p95 {percentile(told, 95):.2f} s" if told else "none"
    report.line("Callback -> credited -> receipt", f"{late} ({len(told)}/{n} told, {LATENCY_RATE}/s)",
                "p95 <= 3 s at 20/s", bool(told) and len(told) == n and percentile(told, 95) <= 3)
    if credited:
        report.line("    callback -> credited", f"p50 {statistics.median(credited):.2f} s, "
                    f"p95 {percentile(credited, 95):.2f} s ({len(credited)}/{n})", "", None)


async def send_callbacks_at_rate(url: str, n: int, rate: float) -> dict[str, float]:
    """Paid callbacks for lat-0 .. lat-(n-1), one every 1/rate s whatever the answers take; returns each
    CheckoutRequestID's send time (epoch seconds: the database's timestamps are compared with it)."""
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        async def one(i: int) -> None:
            checkout = f"ws_CO_lat_{i}"
            body = {"Body": {"stkCallback": {
                "MerchantRequestID": f"lat-{i}", "CheckoutRequestID": checkout, "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 100.0}, {"Name": "MpesaReceiptNumber",
                                              "Value": f"LAT{i:07d}"}, {"Name": "TransactionDate", "Value": 20261127101500},
                                             {"Name": "PhoneNumber", "Value": 254700000000}]}}}}
            sent[checkout] = time.time()
            answer = await client.post(url, json=body)
            answer.raise_for_status()

        tasks, started = [], time.monotonic()
        for i in range(n):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return sent


async def queue_topups(settings: Settings, numbers: list[str]) -> list[str]:
    from core.admin.operator import Actor, manual_topup
    from web.bootstrap import build_container

    services = build_container(settings)
    try:
        return [(await manual_topup(number, 50, "bench", actor=Actor("bench"), uow=services.uow(),
                                    profiles=services.profiles, clock=services.clock)).id for number in numbers]
    finally:
        await services.aclose()


def growth_phase(url: str, sandboxes: Sandboxes, report: Report, args, small_vs_bare: float,
                 small_drain: float) -> None:
    """Callbacks again (ingestion, then the drain) with `--growth` more settled payments stored. Ingestion is
    measured in turns with the bare endpoint again, the drain beside it (bare_pace), and each is compared as
    its ratio to bare (big tables against small): the two runs are minutes apart, and the machine's speed
    drifts more than that in between."""
    started = time.monotonic()
    add_history(url, args.growth)
    settle(url)
    filled = time.monotonic() - started
    port, bare_port = reserve_port(), reserve_port()
    public = f"http://127.0.0.1:{port}"
    env = settings_env(settings_for(url, sandboxes, public, args.concurrency))
    ours_cmd, bare_cmd = serve_commands(port, bare_port, args.workers)
    ours, bare = Process(ours_cmd, env), Process(bare_cmd, env)
    try:
        ours.wait_http(public + "/healthz")
        bare.wait_http(f"http://127.0.0.1:{bare_port}/ack")
        big = callbacks_in_turns(public, f"http://127.0.0.1:{bare_port}", args.seconds, offset=PENDING // 2)
    finally:
        ours.stop()
        bare.stop()
    ratio = big.ratio / small_vs_bare
    report.line(f"Growth: +{args.growth:,} payments", f"rows written and settled in {filled:.0f} s", "", None)
    report.line("    callback ingestion", f"{big.ours.rate:7.0f}/s, {big.ratio:.2f} of bare: {ratio:.2f} of the "
                "small tables' ratio", ">= 0.9", ratio >= 0.9)
    drained = drain_phase(url, sandboxes, report, args, label="    inbox drain")
    ratio = drained / small_drain
    report.line("    inbox drain", f"{drained * 1000:.1f} per 1,000 bare requests: {ratio:.2f} of the small tables'",
                ">= 0.9", ratio >= 0.9)


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
    run_sql(admin, f'CREATE DATABASE "{name}"', autocommit=True)
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        run_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', autocommit=True)


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
            settle(url)  # as after the growth run's bulk load, so both runs start from a settled database
            callbacks_vs_bare = http_phase(url, sandboxes, report, args)
            drained = drain_phase(url, sandboxes, report, args)
            topup_phase(url, sandboxes, report, args)
            latency_phase(url, sandboxes, report, args)
            if args.growth:
                growth_phase(url, sandboxes, report, args, callbacks_vs_bare, drained)
        finally:
            sandboxes.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3, help="length of each measured wrk run")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=1, help="serve processes (lipameter serve --workers)")
    parser.add_argument("--concurrency", type=int, default=32, help="WORKER_CONCURRENCY for the top-up and latency runs")
    parser.add_argument("--poll", type=float, default=None, help="TOPUP_POLL_INTERVAL_S for the top-up run "
                        "(default: the product's)")
    parser.add_argument("--growth", type=int, default=1_000_000,
                        help="payments added for the growth run (0: skip it)")
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
