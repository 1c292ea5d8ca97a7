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
from web.bootstrap import build_container


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
    container = build_container(stack.settings)
    try:
        for _ in range(n):
            await manual_topup("A101", 10, "bench", actor=Actor("bench"), uow=container.uow(),
                               profiles=container.profiles, clock=container.clock)
        engine = container.topup_engine
        assert engine is not None  # the bench stack has the Tuya sandbox
        ids = [r.id for r in await asyncio.to_thread(
            run_sql, stack.database_url, "SELECT id FROM topups WHERE status = 'queued'")]
        started = time.perf_counter()
        for topup_id in ids:
            await engine.run(topup_id)
        return len(ids) / (time.perf_counter() - started)
    finally:
        await container.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="requests per measurement")
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
