"""Throughput of the hot paths, as ratios to a bare Starlette endpoint measured in the same run.

    make bench            # or: .venv/bin/python -m bench.run [--n 200]

Everything runs on loopback: the app under uvicorn with its sandboxes (tests/stack.py), SQLite in a
temporary folder (or DATABASE_URL for PostgreSQL). Absolute numbers depend on the machine; the ratios
say what our work costs over the web stack itself. This is a measurement, not a test: nothing asserts."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from core.admin.operator import Actor, manual_topup
from storage.migrate import upgrade
from tests.servers import ServerThread
from tests.stack import Stack, run_sql
from web.services import build_services


def bare_app() -> Starlette:
    async def ack(request):
        await request.body()
        return JSONResponse({"ResultCode": 0, "ResultDesc": "Accepted"})

    async def con(request):
        await request.body()
        return PlainTextResponse("CON LipaMeter\n1. Buy electricity")

    return Starlette(routes=[Route("/ack", ack, methods=["POST"]), Route("/ussd", con, methods=["POST"])])


def timed(label: str, n: int, send) -> float:
    """Requests per second over n sequential calls (after a short warm-up)."""
    for _ in range(5):
        send(-1)
    started = time.perf_counter()
    for i in range(n):
        send(i)
    rate = n / (time.perf_counter() - started)
    print(f"  {label:<44} {rate:>9.0f} /s")
    return rate


def pending_payments(stack: Stack, n: int) -> list[str]:
    """n pending payments with known CheckoutRequestIDs, written directly (the push is not measured)."""
    meter = run_sql(stack.database_url, "SELECT id FROM meters WHERE number = 'A101'")[0].id
    ids = [f"ws_CO_bench_{uuid.uuid4().hex[:12]}" for _ in range(n)]
    for i, checkout in enumerate(ids):
        run_sql(stack.database_url,
                "INSERT INTO payments (id, amount, phone, meter_id, channel, description, status, "
                "checkout_request_id, created_at, updated_at) VALUES (:id, 100, :phone, :m, 'api', '', 'pending', "
                ":c, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                id=str(uuid.uuid4()), phone=f"2547{i:08d}", m=meter, c=checkout)
    return ids


def callback_body(checkout: str, i: int) -> bytes:
    return json.dumps({"Body": {"stkCallback": {
        "MerchantRequestID": "1-1-1", "CheckoutRequestID": checkout, "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 100.0},
                                      {"Name": "MpesaReceiptNumber", "Value": f"BEN{i:07d}"},
                                      {"Name": "TransactionDate", "Value": 20261127101500},
                                      {"Name": "PhoneNumber", "Value": 254700000000}]}}}}).encode()


async def topups_per_second(stack: Stack, n: int) -> float:
    services = build_services(stack.settings)
    try:
        for _ in range(n):
            await manual_topup("A101", 10, "bench", actor=Actor("bench"), uow=services.uow(),
                               profiles=services.profiles, clock=services.clock)
        engine = services.topup_engine()
        ids = [r.id for r in await asyncio.to_thread(
            run_sql, stack.database_url, "SELECT id FROM topups WHERE status = 'queued'")]
        started = time.perf_counter()
        for topup_id in ids:
            await engine.run(topup_id)
        return len(ids) / (time.perf_counter() - started)
    finally:
        await services.aclose()


async def tuya_calls_per_topup(stack: Stack, n: int, report_every_s: float = 5.0) -> list[int]:
    """Tuya calls for each applied top-up on a meter that reports every `report_every_s` (so a charge
    shows 0-5 s after it lands), with the production polling policy (not the fast one above)."""
    from dataclasses import replace

    from core.jobs.worker import RetryLater

    stack.tuya.set_fault("dev-a101", "late_report", seconds=report_every_s)
    services = build_services(stack.settings)
    try:
        for _ in range(n):
            await manual_topup("A101", 10, "bench", actor=Actor("bench"), uow=services.uow(),
                               profiles=services.profiles, clock=services.clock)
        engine = services.topup_engine()
        engine.policy = replace(engine.policy, poll_interval_s=1.0, confirm_deadline_s=20.0)
        ids = [r.id for r in await asyncio.to_thread(
            run_sql, stack.database_url, "SELECT id FROM topups WHERE status = 'queued'")]
        for topup_id in ids:
            try:
                await engine.run(topup_id)
            except RetryLater:
                pass  # counted all the same: the calls were made
        return sorted(engine.tuya_calls[topup_id] for topup_id in ids)
    finally:
        stack.tuya.clear_faults("dev-a101")
        await services.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="requests per measurement")
    parser.add_argument("--topups-slow", type=int, default=10,
                        help="top-ups on a meter reporting every 5 s, to count Tuya calls (each takes seconds)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = os.environ.get("DATABASE_URL") or f"sqlite+aiosqlite:///{folder}/bench.db"
        upgrade(url)
        stack = Stack(url, run_worker=False, topup_poll_interval_s=0.01)
        bare = ServerThread(bare_app()).start()
        client = httpx.Client(timeout=10)
        try:
            print(f"LipaMeter bench, n={args.n}, database {url.split(':')[0]}")
            base_ack = timed("bare Starlette JSON endpoint", args.n,
                             lambda i: client.post(bare.url + "/ack", content=callback_body("x", i)))
            ids = pending_payments(stack, args.n + 5)
            callbacks = timed("M-Pesa callback (store, lock, complete, enqueue)", args.n,
                              lambda i: client.post(stack.callback_url, content=callback_body(ids[i + 5 if i >= 0 else 0], i + 5)))
            base_ussd = timed("bare Starlette text endpoint", args.n,
                              lambda i: client.post(bare.url + "/ussd", data={"text": ""}))
            form = lambda i: {"sessionId": f"bench-{uuid.uuid4().hex}", "serviceCode": "*384*1#",
                              "phoneNumber": "+254712345678", "networkCode": "63902", "text": ""}
            hops = timed("USSD first hop (session row, dialogue, render)", args.n,
                         lambda i: client.post(stack.url + "/ussd", data=form(i)))
            topups = asyncio.run(topups_per_second(stack, max(10, args.n // 10)))
            print(f"  {'top-ups applied on a sandbox meter, one worker':<44} {topups:>9.1f} /s")
            calls = asyncio.run(tuya_calls_per_topup(stack, args.topups_slow))
            p95 = calls[max(0, -(-len(calls) * 95 // 100) - 1)]
            print(f"  {'Tuya calls per top-up, meter reporting in 5 s':<44} median {statistics.median(calls):g}, "
                  f"p95 {p95} (n={len(calls)}; goal: median <= 6)")
            print("ratios (higher is slower than the bare endpoint):")
            print(f"  callback ingestion  {base_ack / callbacks:6.1f}x")
            print(f"  USSD hop            {base_ussd / hops:6.1f}x")
            print(f"  top-up              {base_ack / topups:6.0f}x  (each reads the meter, sends, polls until it shows)")
        finally:
            client.close()
            bare.stop()
            stack.stop()


if __name__ == "__main__":
    main()
