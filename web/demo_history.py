"""A little history for `lipameter demo`, made through the product itself once the server is up: real
STK pushes to the Daraja sandbox, real callbacks, real top-ups on the sandbox meters. One top-up fails on
purpose (the Tuya project "loses permission" on meter A102 for one request), so that a landlord can find
it on the dashboard and fix it with "retry top-up"; one payment is paid after M-Pesa reported it failed,
so it waits on the review list to be credited or dismissed. One payment comes from the M-Pesa menu
(Pay Bill 600000, account A101), after the C2B URLs are registered as `lipameter mpesa register-urls` does."""

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


def register_c2b(client: httpx.Client, c2b: dict) -> None:
    """Register the C2B URLs with the Daraja sandbox and switch its external validation on."""
    daraja = "/sandbox/daraja"
    token = client.get(f"{daraja}/oauth/v1/generate", params={"grant_type": "client_credentials"},
                       auth=c2b["credentials"]).json()["access_token"]
    client.post(f"{daraja}/mpesa/c2b/v2/registerurl", json=c2b["register"], headers={"Authorization": f"Bearer {token}"})
    client.post(f"{daraja}/sandbox/c2b", json={"validation": True, "shortcode": c2b["register"]["ShortCode"]})


def make_history(base_url: str, api_key: str, c2b: dict | None = None) -> None:
    with httpx.Client(base_url=base_url, timeout=20, headers={"Authorization": f"Bearer {api_key}"}) as client:
        if not _wait_until_up(client):
            log.warning("demo history skipped: the server did not come up")
            return
        if c2b:
            register_c2b(client, c2b)
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
        if c2b:
            client.post("/sandbox/daraja/sandbox/c2b/pay", json={
                "ShortCode": c2b["register"]["ShortCode"], "CommandID": "CustomerPayBillOnline", "Amount": 250,
                "Msisdn": "254766000555", "BillRefNumber": "A101"})
        log.info("demo history made: %d payments (one top-up fails on purpose: fix it on the dashboard)",
                 len(HISTORY))


def start_history(base_url: str, api_key: str, *, database_has_payments: bool, c2b: dict | None = None) -> None:
    """`c2b`: {"credentials": (key, secret), "register": Register URL body}; the URLs are registered on every run
    (the sandbox forgets them), the history made only into an empty database."""
    if database_has_payments:
        if c2b:
            threading.Thread(target=_register_only, args=(base_url, api_key, c2b), name="demo-c2b", daemon=True).start()
        return
    threading.Thread(target=make_history, args=(base_url, api_key, c2b), name="demo-history", daemon=True).start()


def _register_only(base_url: str, api_key: str, c2b: dict) -> None:
    with httpx.Client(base_url=base_url, timeout=20, headers={"Authorization": f"Bearer {api_key}"}) as client:
        if _wait_until_up(client):
            register_c2b(client, c2b)
