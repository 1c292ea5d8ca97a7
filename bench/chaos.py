"""`make chaos`: the storm the money path must survive, on one machine, with the real processes.

A private PostgreSQL cluster (restarted once mid-run), two `lipameter serve` replicas and two `lipameter
worker`s (killed with SIGKILL and restarted), the Daraja, Tuya and SMS sandboxes over real HTTP. Tenants start
payments on random replicas; Daraja's callbacks pass through a proxy that drops some (reconcile must find
them), delivers the others 1-5 times, shuffled, to random replicas, and sends a late failure after some
successes. The Tuya meters fail, throttle, go offline and lose answers. At the end `lipameter audit` must be
clean, and the sandbox's own credit log must match the books: every paid shilling credited once.

    python -m bench.chaos [--payments 120] [--meters 12] [--seconds 180] [--no-pg-restart]

Prints one summary line; exits 1 when money went wrong (a double credit, a lost payment, an audit
violation) or any request got a 5xx other than the outage's 503.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.daraja import create_daraja_sandbox
from sandbox.sms import create_sms_sandbox
from sandbox.tuya import create_tuya_sandbox

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "chaos-callback-token-0123456789"
API_KEY = "chaos-api-key"
DARAJA = dict(consumer_key="ck-chaos", consumer_secret="cs-chaos", shortcode="174379", passkey="pk-chaos")
TUYA = dict(access_id="tuya-chaos-id", access_secret="tuya-chaos-secret")
SMS = dict(username="sandbox", api_key="at-chaos-key")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Threaded:
    """A Starlette app under uvicorn in a thread of this process (the sandboxes, the callback proxy)."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Threaded:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


# --- a PostgreSQL of our own, so that restarting it disturbs nobody else ---------------------------------


class PrivatePostgres:
    def __init__(self) -> None:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not versions:
            raise SystemExit("chaos needs PostgreSQL's server binaries (Debian: postgresql)")
        self.bin = versions[-1].parent
        self.dir = Path(tempfile.mkdtemp(prefix="lipameter-chaos-pg-"))
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, *args], check=True, capture_output=True, text=True)

    def start(self) -> None:
        if not (self.dir / "PG_VERSION").exists():
            if self.as_postgres:
                shutil.chown(self.dir, "postgres", "postgres")
            self._run(str(self.bin / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-o", options, "-l", str(self.dir / "log"), "-w",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# --- what happened ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    server_errors: int = 0  # 5xx other than the outage's 503
    unavailable: int = 0  # 503 during the outage (retried)
    callbacks_dropped: int = 0
    callbacks_sent: int = 0
    late_failures: int = 0
    kills: int = 0
    errors: list[str] = field(default_factory=list)

    def saw(self, answer: httpx.Response, what: str) -> None:
        self.requests += 1
        if answer.status_code == 503:
            self.unavailable += 1
        elif answer.status_code >= 500:
            self.server_errors += 1
            self.errors.append(f"{what}: {answer.status_code} {answer.text[:200]}")


# --- Daraja's callbacks, dropped, duplicated and shuffled ---------------------------------------------------


def callback_proxy(replicas: list[str], tally: Tally, rng: random.Random, tasks: set) -> Starlette:
    async def deliver(body: bytes, delay: float) -> None:
        await asyncio.sleep(delay)
        async with httpx.AsyncClient(timeout=30) as client:
            for attempt in range(20):  # Safaricom gives up sooner; we keep the storm honest about our side
                try:
                    answer = await client.post(f"{rng.choice(replicas)}/payments/callback/{TOKEN}", content=body,
                                               headers={"content-type": "application/json"})
                    tally.saw(answer, "callback")
                    if answer.status_code != 503:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(min(0.5 * 2 ** attempt, 4))

    def late_failure(body: bytes) -> bytes:
        document = json.loads(body)
        stk = document["Body"]["stkCallback"]
        stk.update(ResultCode=1032, ResultDesc="Request cancelled by user")
        stk.pop("CallbackMetadata", None)
        return json.dumps(document).encode()

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        if rng.random() < 0.1:
            tally.callbacks_dropped += 1  # lost on the way: reconcile's STK query must settle it
        else:
            copies = rng.randint(1, 5)
            tally.callbacks_sent += copies
            for _ in range(copies):
                _spawn(tasks, deliver(body, rng.uniform(0, 2.0)))
            if _paid(body) and rng.random() < 0.15:
                tally.late_failures += 1
                _spawn(tasks, deliver(late_failure(body), rng.uniform(2.0, 4.0)))
        return JSONResponse({"ResultCode": 0, "ResultDesc": "Accepted"})

    return Starlette(routes=[Route("/payments/callback/{token}", receive, methods=["POST"])])


def _paid(body: bytes) -> bool:
    try:
        return json.loads(body)["Body"]["stkCallback"]["ResultCode"] in (0, "0")
    except (ValueError, KeyError, TypeError):
        return False


def _spawn(tasks: set, coroutine) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


# --- the product's processes ------------------------------------------------------------------------------


class Fleet:
    def __init__(self, env: dict[str, str], tally: Tally) -> None:
        self.env, self.tally = env, tally
        self.ports = [free_port(), free_port()]
        self.replicas = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.servers: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.logs = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (open for the fleet's lifetime)

    def _spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "web.cli", *args], cwd=ROOT, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=self.logs)

    def start(self) -> None:
        subprocess.run([sys.executable, "-m", "web.cli", "migrate"], cwd=ROOT, env=self.env, check=True,
                       capture_output=True)
        self.servers = [self._spawn("serve", "--no-worker", "--port", str(port)) for port in self.ports]
        self.workers = [self._spawn("worker") for _ in range(2)]
        deadline = time.monotonic() + 60
        for url in self.replicas:
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"replica {url} did not start")
                time.sleep(0.2)

    def kill_a_worker(self, rng: random.Random) -> None:
        index = rng.randrange(len(self.workers))
        self.workers[index].send_signal(signal.SIGKILL)
        self.workers[index].wait()
        self.tally.kills += 1
        self.workers[index] = self._spawn("worker")

    def stop(self) -> None:
        for process in [*self.servers, *self.workers]:
            process.terminate()
        for process in [*self.servers, *self.workers]:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


# --- the storm --------------------------------------------------------------------------------------------


async def pay(client: httpx.AsyncClient, fleet: Fleet, rng: random.Random, tally: Tally, n: int,
              meters: list[str], daraja) -> None:
    phone = f"07{11000000 + n:08d}"
    if rng.random() < 0.1:
        daraja.script_phone("254" + phone[1:], rng.choice(["cancelled", "insufficient_funds", "unreachable"]))
    body = {"amount": rng.randint(10, 500), "phoneNumber": phone, "meterId": rng.choice(meters),
            "description": "Electricity"}
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": f"chaos-{n}"}
    for attempt in range(30):
        try:
            answer = await client.post(f"{rng.choice(fleet.replicas)}/mpesa/payments", json=body, headers=headers)
        except httpx.TransportError:
            await asyncio.sleep(1)
            continue
        tally.saw(answer, "payment")
        if answer.status_code not in (503, 409) or attempt == 29:
            return
        await asyncio.sleep(min(0.5 * 2 ** attempt, 4))  # the outage, or the first try still in flight


async def tuya_weather(tuya, devices: list[str], rng: random.Random, stop: asyncio.Event) -> None:
    """Faults on random meters all along: errors, throttling, lost answers, offline spells."""
    offline: dict[str, float] = {}
    while not stop.is_set():
        device = rng.choice(devices)
        kind = rng.choice(["server_error", "throttle", "apply_lose_answer", "slow", "offline"])
        if kind == "offline":
            tuya.set_fault(device, "offline")
            offline[device] = time.monotonic() + rng.uniform(3, 10)
        elif kind == "apply_lose_answer":
            tuya.set_fault(device, kind, n=1, mode="drop")
        elif kind == "slow":
            tuya.set_fault(device, kind, n=1, seconds=rng.uniform(0.5, 3))
        else:
            tuya.set_fault(device, kind, n=rng.randint(1, 2))
        for back, until in list(offline.items()):
            if time.monotonic() > until:
                tuya.set_fault(back, "online")
                del offline[back]
        await asyncio.sleep(0.3)
    for back in offline:
        tuya.set_fault(back, "online")


async def storm(args, fleet: Fleet, pg: PrivatePostgres | None, daraja, tuya, devices: list[str],
                meters: list[str], rng: random.Random, tally: Tally) -> None:
    stop = asyncio.Event()
    weather = asyncio.create_task(tuya_weather(tuya, devices, rng, stop))
    spacing = args.seconds * 0.5 / args.payments  # payments in the first half, recovery in the second
    restart_at = args.payments * 2 // 5 if pg is not None else -1
    async with httpx.AsyncClient(timeout=30) as client:
        paying: list[asyncio.Task] = []  # and, once, the database restarting while tenants keep paying
        next_kill = time.monotonic() + rng.uniform(5, 10)
        for n in range(args.payments):
            paying.append(asyncio.create_task(pay(client, fleet, rng, tally, n, meters, daraja)))
            if n == restart_at:
                paying.append(asyncio.create_task(asyncio.to_thread(restart_postgres, pg)))
            if time.monotonic() > next_kill and tally.kills < args.kills:
                await asyncio.to_thread(fleet.kill_a_worker, rng)
                next_kill = time.monotonic() + rng.uniform(5, 10)
            await asyncio.sleep(spacing)
        await asyncio.gather(*paying)
    stop.set()
    await weather


def restart_postgres(pg: PrivatePostgres) -> None:
    pg.stop("fast")
    time.sleep(3)  # requests meanwhile get 503 and a retry hint
    pg.start()


async def settled(url: str, deadline: float) -> bool:
    """True once no payment waits for Daraja and no top-up waits for a meter."""
    engine = sa_engine(url)
    try:
        while time.monotonic() < deadline:
            try:
                async with engine.connect() as conn:
                    waiting = (await conn.execute(sa.text(
                        "SELECT (SELECT count(*) FROM payments WHERE status IN ('requested', 'pending'))"
                        " + (SELECT count(*) FROM topups WHERE status IN ('queued', 'sending'))"))).scalar_one()
                if waiting == 0:
                    return True
            except Exception:  # the database may still be coming back
                pass
            await asyncio.sleep(1)
        return False
    finally:
        await engine.dispose()


def sa_engine(url: str):
    from storage.db import create_engine

    return create_engine(url)


async def explain_unsettled(url: str) -> None:
    engine = sa_engine(url)
    try:
        async with engine.connect() as conn:
            for row in await conn.execute(sa.text(
                    "SELECT t.status, t.attempts, t.last_error, t.next_attempt_at, t.sent_at, p.status AS pay"
                    " FROM topups t JOIN payments p ON p.id = t.payment_id WHERE t.status IN ('queued', 'sending')")):
                print(f"  waiting top-up: {dict(row._mapping)}")
            for row in await conn.execute(sa.text(
                    "SELECT status, count(*) n FROM payments WHERE status IN ('requested', 'pending') GROUP BY status")):
                print(f"  waiting payments: {dict(row._mapping)}")
            for row in await conn.execute(sa.text(
                    "SELECT kind, status, attempts, run_after, lease_until, last_error FROM jobs"
                    " WHERE status IN ('queued', 'running') ORDER BY run_after LIMIT 10")):
                print(f"  job: {dict(row._mapping)}")
    finally:
        await engine.dispose()


async def books(url: str) -> dict:
    engine = sa_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text(
                "SELECT m.device_id, p.status AS pay, t.status AS topup, t.amount, p.checkout_request_id"
                " FROM payments p JOIN meters m ON m.id = p.meter_id LEFT JOIN topups t ON t.payment_id = p.id"))).all()
    finally:
        await engine.dispose()
    return {"rows": rows}


def summarise(args, tally: Tally, daraja, tuya, devices: list[str], ledger: dict, audit: dict, quiet: bool) -> int:
    rows = ledger["rows"]
    paid_at_daraja = {t.checkout_request_id for t in daraja.transactions if t.result_code == 0}
    completed = [r for r in rows if r.pay == "completed"]
    applied = [r for r in rows if r.topup == "applied"]
    in_review = sum(1 for r in rows if r.pay == "needs_review" or r.topup == "needs_review")
    lost = sum(1 for r in rows if r.checkout_request_id in paid_at_daraja
               and r.pay not in ("completed", "needs_review"))
    doubles = 0
    for device in devices:
        # What the books say may be on the meter: applied, plus what is still being verified or waits for a
        # person (a charge sent whose answer was lost). More than that on the meter is a double credit.
        booked = sum((Decimal(r.amount) for r in rows if r.device_id == device
                      and r.topup in ("applied", "sending", "needs_review")), Decimal(0))
        doubles += int(tuya.total_credits(device) > booked)
    line = (f"chaos: payments {args.payments}, paid {len(completed)}, credited {len(applied)}, doubles {doubles}, "
            f"lost {lost}, in review {in_review}, 5xx {tally.server_errors}, 503 {tally.unavailable}, "
            f"kills {tally.kills}, callbacks {tally.callbacks_sent} sent / {tally.callbacks_dropped} dropped / "
            f"{tally.late_failures} late failures, audit {'clean' if audit.get('ok') else 'VIOLATED'}, "
            f"settled {'yes' if quiet else 'NO'}")
    print(line, flush=True)
    for error in tally.errors[:10]:
        print("  " + error)
    if not audit.get("ok"):
        for finding in audit.get("findings", []):
            if finding.get("severity") == "violation":
                print(f"  audit: {finding}")
    return 0 if (audit.get("ok") and doubles == 0 and lost == 0 and tally.server_errors == 0 and quiet) else 1


def environment(database_url: str, daraja_url: str, tuya_url: str, sms_url: str, proxy_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DARAJA_", "TUYA_", "AT_", "TELEGRAM_",
                                                                         "WHATSAPP_"))}
    env.update(
        DATABASE_URL=database_url, PUBLIC_BASE_URL=proxy_url, API_KEYS=API_KEY, CALLBACK_TOKEN=TOKEN,
        DARAJA_BASE_URL=daraja_url, DARAJA_CONSUMER_KEY=DARAJA["consumer_key"],
        DARAJA_CONSUMER_SECRET=DARAJA["consumer_secret"], DARAJA_SHORTCODE=DARAJA["shortcode"],
        DARAJA_PASSKEY=DARAJA["passkey"], DARAJA_TIMEOUT_S="5", MIN_AMOUNT="10", MAX_AMOUNT="70000",
        TUYA_ENDPOINT=tuya_url, TUYA_ACCESS_ID=TUYA["access_id"], TUYA_ACCESS_SECRET=TUYA["access_secret"],
        TUYA_TIMEOUT_S="2", TOPUP_CONFIRM_DEADLINE_S="3", TOPUP_POLL_INTERVAL_S="0.2",
        TOPUP_BACKOFF_S=",".join(["0.5", "1", "2"] + ["3"] * 37),
        TOPUP_MAX_ATTEMPTS="40", TOPUP_ATTEMPT_LEASE_S="20", JOB_LEASE_S="20", RECONCILE_AFTER_S="8",
        RECONCILE_GIVE_UP_S="600", SWEEP_EVERY_S="1", AT_USERNAME=SMS["username"], AT_API_KEY=SMS["api_key"],
        AT_API_BASE=sms_url, LOG_LEVEL="WARNING",
    )
    return env


def register_meters(env: dict[str, str], tuya, count: int) -> tuple[list[str], list[str]]:
    devices, numbers = [], []
    for i in range(count):
        device, number = f"dev-chaos-{i}", f"C{i:03d}"
        tuya.add_device(device, "seed", balance="0", price="25")
        subprocess.run([sys.executable, "-m", "web.cli", "meter", "add", "--number", number, "--name", f"Flat {i}",
                        "--device-id", device, "--price", "25"], cwd=ROOT, env=env, check=True, capture_output=True)
        devices.append(device)
        numbers.append(number)
    return devices, numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=120)
    parser.add_argument("--meters", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=180, help="the storm's length; settling comes after")
    parser.add_argument("--kills", type=int, default=6, help="worker SIGKILLs")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-pg-restart", action="store_true", help="keep the database up")
    parser.add_argument("--database-url", default=None, help="use this database instead of a private PostgreSQL")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    rng, tally = random.Random(seed), Tally()
    print(f"chaos: seed {seed}", flush=True)

    pg = None if args.database_url else PrivatePostgres()
    daraja_app = create_daraja_sandbox(callback_delay_s=1.0, **DARAJA)
    tuya_app, sms_app = create_tuya_sandbox(**TUYA), create_sms_sandbox(**SMS)
    servers = [Threaded(daraja_app).start(), Threaded(tuya_app).start(), Threaded(sms_app).start()]
    fleet, proxy = None, None
    try:
        if pg is not None:
            pg.start()
        url = args.database_url or pg.url
        proxy_tasks: set = set()
        ports = [free_port(), free_port()]
        replicas = [f"http://127.0.0.1:{port}" for port in ports]
        proxy = Threaded(callback_proxy(replicas, tally, rng, proxy_tasks)).start()
        env = environment(url, servers[0].url, servers[1].url, servers[2].url, proxy.url)
        fleet = Fleet(env, tally)
        fleet.ports, fleet.replicas = ports, replicas
        fleet.start()
        devices, numbers = register_meters(env, tuya_app.state.tuya, args.meters)
        asyncio.run(storm(args, fleet, pg if not args.no_pg_restart else None, daraja_app.state.daraja,
                          tuya_app.state.tuya, devices, numbers, rng, tally))
        stormed = time.monotonic()
        quiet = asyncio.run(settled(url, time.monotonic() + max(60.0, args.seconds * 0.5)))
        print(f"chaos: storm over; settled in {time.monotonic() - stormed:.0f} s", flush=True)
        if not quiet:
            asyncio.run(explain_unsettled(url))
        audited = subprocess.run([sys.executable, "-m", "web.cli", "audit", "--json"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, check=False)
        audit = json.loads(audited.stdout) if audited.stdout.strip().startswith("{") else {"ok": False}
        ledger = asyncio.run(books(url))
        return summarise(args, tally, daraja_app.state.daraja, tuya_app.state.tuya, devices, ledger, audit, quiet)
    finally:
        if fleet is not None:
            fleet.stop()
        for server in [*servers, *([proxy] if proxy else [])]:
            server.stop()
        if pg is not None:
            pg.destroy()


if __name__ == "__main__":
    sys.exit(main())
