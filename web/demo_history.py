"""A little history for `lipameter demo`, made through the product itself once the server is up: real
STK pushes to the Daraja sandbox, real callbacks, real top-ups on the sandbox meters. One top-up fails on
purpose (the Tuya project "loses permission" on meter A102 for one request), so that a landlord can find
it on the dashboard and fix it with "retry top-up"; one payment is paid after M-Pesa reported it failed,
so it waits on the review list to be credited or dismissed."""

from __future__ import annotations

import logging
import threading
import time

import httpx

log = logging.getLogger("lipameter.demo")

# (phone, meter, amount, Daraja outcome, Tuya fault on the meter's device before paying)
HISTORY = [
    ("0712345678", "A101", 200, "success", None),
    ("0722000111", "B201", 500, "success", None),
    ("0733000222", "A101", 100, "cancelled", None),
    ("0744000333", "A102", 300, "success", ("sbx-a102", {"kind": "throttle", "code": 1106, "n": 1})),
    # The prompt "times out", then M-Pesa says paid after all: the payment waits on the review list.
    ("0755000444", "B201", 150, "late_success", None),
]


def _wait_until_up(client: httpx.Client, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def make_history(base_url: str, api_key: str) -> None:
    with httpx.Client(base_url=base_url, timeout=20, headers={"Authorization": f"Bearer {api_key}"}) as client:
        if not _wait_until_up(client):
            log.warning("demo history skipped: the server did not come up")
            return
        for phone, meter, amount, outcome, fault in HISTORY:
            msisdn = "254" + phone[1:]
            client.post("/sandbox/daraja/sandbox/script", json={"phone": msisdn, "outcome": outcome})
            if fault:
                client.post(f"/sandbox/tuya/sandbox/devices/{fault[0]}/fault", json=fault[1])
            answer = client.post("/mpesa/payments", json={"amount": amount, "phoneNumber": phone, "meterId": meter,
                                                          "description": "Demo history"})
            if answer.status_code == 409:
                continue  # this phone already has a prompt waiting (an earlier run's)
            client.post("/sandbox/daraja/sandbox/script", json={"phone": msisdn, "outcome": "success"})
        log.info("demo history made: %d payments (one top-up fails on purpose: fix it on the dashboard)",
                 len(HISTORY))


def start_history(base_url: str, api_key: str, *, database_has_payments: bool) -> None:
    if database_has_payments:
        return
    threading.Thread(target=make_history, args=(base_url, api_key), name="demo-history", daemon=True).start()
