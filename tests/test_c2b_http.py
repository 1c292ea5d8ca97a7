"""Issue 13 end to end: Paybill and Till payments over real HTTP. The app under uvicorn, the Daraja
sandbox registering its C2B URLs and simulating payments (validation, then confirmation, posted to
the app), the real Tuya client crediting the sandbox meter; on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import time
from decimal import Decimal

import httpx
import pytest

from tests.c2b_samples import c2b_body
from tests.cli_helpers import lipameter
from tests.stack import CALLBACK_TOKEN, DARAJA, Stack, settings_env

PAYBILL = DARAJA["shortcode"]  # DARAJA_C2B_SHORTCODE defaults to DARAJA_SHORTCODE


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url, topup_backoff_s="0.3,0.3,0.5", tuya_timeout_s=1.0)
    yield stack
    stack.stop()


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """`lipameter ARGS` run by the operator of this stack."""
    return lipameter(*args, env=settings_env(stack.settings))


def register(stack: Stack, *, response_type: str = "Completed") -> None:
    registered = cli(stack, "mpesa", "register-urls", "--response-type", response_type)
    assert registered.returncode == 0, registered.stderr
    registration = stack.daraja.c2b.registrations[PAYBILL]
    assert registration["ResponseType"] == response_type
    assert registration["ConfirmationURL"] == f"{stack.url}/payments/c2b/confirm/{CALLBACK_TOKEN}"
    assert registration["ValidationURL"] == f"{stack.url}/payments/c2b/validate/{CALLBACK_TOKEN}"


def simulate(stack: Stack, *, account: str = "A101", amount: object = 150, command: str = "CustomerPayBillOnline",
             msisdn: str = "254712345678") -> None:
    base = stack.settings.daraja_base_url
    token = httpx.get(f"{base}/oauth/v1/generate", params={"grant_type": "client_credentials"},
                      auth=(DARAJA["consumer_key"], DARAJA["consumer_secret"])).json()["access_token"]
    body = {"ShortCode": PAYBILL, "CommandID": command, "Amount": amount, "Msisdn": msisdn, "BillRefNumber": account}
    answer = httpx.post(f"{base}/mpesa/c2b/v1/simulate", json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["ResponseCode"] == "0", answer.text


def wait(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def settled(stack: Stack, count: int = 1, timeout: float = 10) -> list:
    deadline = time.monotonic() + timeout
    while True:
        payments = stack.daraja.c2b.payments
        if len(payments) >= count and all(p.outcome != "pending" for p in payments):
            return payments
        assert time.monotonic() < deadline, [p.as_dict() for p in payments]
        time.sleep(0.05)


def test_paybill_payment_is_validated_confirmed_and_credited_on_the_meter(stack):
    register(stack)
    stack.daraja.c2b.enable_validation(PAYBILL)
    simulate(stack, account="a-101", amount=150)
    [payment] = settled(stack)
    assert payment.validation["answer"] == {"ResultCode": "0", "ResultDesc": "Accepted"}
    done = stack.wait_for(payment.trans_id, lambda p: p["topUpStatus"] == "APPLIED", timeout=20)
    assert (done["channel"], done["status"], done["mpesaReceiptNumber"]) == ("c2b", "COMPLETED", payment.trans_id)
    assert done["meterNumber"] == "A101" and done["paidAmount"] == 150 and done["unitsAdded"] == 150
    assert stack.payment(done["id"])["mpesaReceiptNumber"] == payment.trans_id  # by id too
    assert stack.tuya.total_credits("dev-a101") == Decimal(150)
    # The MSISDN came hashed: the receipt goes to Wanjiku, the tenant linked to A101.
    wait(lambda: stack.sms.messages(to="+254712345678"))
    [sms] = stack.sms.messages(to="+254712345678")
    assert payment.trans_id in sms.message and "A101" in sms.message and "KES 150" in sms.message


def test_a_payer_in_clear_who_is_not_linked_gets_a_receipt_too(stack):
    register(stack)
    stack.daraja.c2b.script("normal", msisdn_in_clear=True)
    simulate(stack, amount=80, msisdn="254722000111")
    [payment] = settled(stack)
    stack.wait_for(payment.trans_id, lambda p: p["topUpStatus"] == "APPLIED", timeout=20)
    wait(lambda: stack.sms.messages(to="+254722000111") and stack.sms.messages(to="+254712345678"))
    assert payment.trans_id in stack.sms.messages(to="+254722000111")[0].message


def test_validation_rejects_an_unknown_account_and_nothing_is_confirmed(stack):
    register(stack)
    stack.daraja.c2b.enable_validation(PAYBILL)
    simulate(stack, account="Z999")
    simulate(stack, account="OFF1")
    simulate(stack, account="A101", amount=5)
    payments = settled(stack, 3)
    assert [p.validation["answer"]["ResultCode"] for p in payments] == ["C2B00012", "C2B00012", "C2B00013"]
    assert [p.outcome for p in payments] == ["rejected"] * 3 and all(not p.confirmations for p in payments)
    assert stack.sql("SELECT count(*) n FROM payments")[0].n == 0
    assert stack.sql("SELECT count(*) n FROM mpesa_callbacks WHERE kind = 'c2b_validation'")[0].n == 3


def test_duplicate_confirmations_credit_once(stack):
    register(stack)
    stack.daraja.c2b.script("duplicate_confirmation", copies=4)
    simulate(stack, amount=120)
    [payment] = settled(stack)
    assert [c["status"] for c in payment.confirmations] == [200] * 4
    stack.wait_for(payment.trans_id, lambda p: p["topUpStatus"] == "APPLIED", timeout=20)
    outcomes = sorted(r.outcome for r in stack.sql("SELECT outcome FROM mpesa_callbacks WHERE kind = 'c2b_confirmation'"))
    assert outcomes == ["completed"] + ["duplicate"] * 3
    assert stack.tuya.total_credits("dev-a101") == Decimal(120)


def test_validation_timeout_with_completed_still_confirms(stack):
    register(stack, response_type="Completed")
    stack.daraja.c2b.enable_validation(PAYBILL)
    stack.daraja.c2b.script("validation_timeout")
    simulate(stack, amount=100)
    [payment] = settled(stack)
    assert payment.outcome == "confirmed"
    stack.wait_for(payment.trans_id, lambda p: p["topUpStatus"] == "APPLIED", timeout=20)


def test_unknown_account_and_till_go_to_review_then_assigned_and_credited_once(stack):
    register(stack)  # validation not enabled: M-Pesa takes any account
    simulate(stack, account="FLAT-9", amount=200)
    simulate(stack, account="", amount=90, command="CustomerBuyGoodsOnline")
    settled(stack, 2)
    assert stack.sql("SELECT count(*) n FROM payments")[0].n == 0
    review = cli(stack, "review", "list")
    assert review.returncode == 0, review.stderr
    listed = [line for line in review.stdout.splitlines() if line.startswith("c2b")]
    assert len(listed) == 2 and "FLAT9 names no meter" in listed[0] and "Till payment without an account" in listed[1]
    first, second = (line.split()[1] for line in listed)
    assert cli(stack, "review", "resolve", first, "--action", "assign", "--meter", "A101", "--reason", "flat 9 is A101",
               "--by", "alice").returncode == 0
    assert cli(stack, "review", "resolve", first, "--action", "assign", "--meter", "A101", "--reason",
               "again").returncode == 2
    assert cli(stack, "review", "resolve", second, "--action", "refund", "--reason", "sent back").returncode == 0
    [receipt] = [r.mpesa_receipt for r in stack.sql("SELECT mpesa_receipt FROM payments")]
    stack.wait_for(receipt, lambda p: p["topUpStatus"] == "APPLIED", timeout=20)
    assert stack.tuya.total_credits("dev-a101") == Decimal(200)
    assert "nothing waits for review" in cli(stack, "review", "list").stdout


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"TransID": "' + b"A" * 40 + b'"}', b"\xff\xfe"])
def test_bad_bodies_are_refused_never_5xx(stack, body):
    for step in ("confirm", "validate"):
        answer = stack.client.post(f"/payments/c2b/{step}/{CALLBACK_TOKEN}", content=body)
        assert answer.status_code in (200, 400), answer.text
        if step == "validate":
            assert answer.json()["ResultCode"] == "C2B00016"
    assert stack.sql("SELECT count(*) n FROM payments")[0].n == 0


def test_wrong_token_and_foreign_sources_are_refused(database_url):
    stack = Stack(database_url, callback_allowed_ips="196.201.214.0/24", run_worker=False)
    try:
        body = c2b_body("SGR7TOKEN1")
        for step in ("confirm", "validate"):
            assert stack.client.post(f"/payments/c2b/{step}/wrong-token-0123456789", json=body).status_code == 404
            assert stack.client.post(f"/payments/c2b/{step}/{CALLBACK_TOKEN}", json=body).status_code == 403
        assert stack.sql("SELECT count(*) n FROM mpesa_callbacks")[0].n == 0
    finally:
        stack.stop()


def test_dashboard_lists_assigns_and_filters_c2b_payments(database_url):
    from tests.admin_helpers import FAST, add_user, logged_in

    stack = Stack(database_url, **FAST)
    try:
        _dashboard_story(stack, add_user, logged_in)
    finally:
        stack.stop()


def _dashboard_story(stack, add_user, logged_in):
    register(stack)
    simulate(stack, account="nobody", amount=75)
    simulate(stack, account="A101", amount=60)
    settled(stack, 2)
    add_user(stack.database_url, "boss", "admin")
    boss = logged_in(stack, "boss")
    overview = boss.page("/admin")
    assert "paid to an unknown account #" in overview.text and "Assign to meter" in overview.text
    [ref] = [r.id for r in stack.sql("SELECT id FROM mpesa_callbacks WHERE outcome = 'unknown_account'")]
    refused = boss.form(f"/admin/reviews/{ref}/resolve", action="assign", meter="OFF1", reason="wrong")
    assert refused.status_code == 303 and "not resolved" in boss.page("/admin").text
    boss.page("/admin")
    done = boss.form(f"/admin/reviews/{ref}/resolve", action="assign", meter="a101", reason="tenant called")
    assert done.status_code == 303
    assert "credited to meter a101" in boss.page("/admin").text
    assert stack.sql("SELECT count(*) n FROM payments WHERE channel = 'c2b'")[0].n == 2
    listed = boss.page("/admin/payments?channel=c2b")
    assert listed.status_code == 200 and listed.text.count("/admin/payments/") >= 2
    assert boss.page("/admin/payments?channel=pigeon").status_code == 400
    csv = boss.page("/admin/payments.csv?channel=c2b").text
    assert csv.count("\nc2b") == 0 and csv.count(",c2b,") == 2 and "payer_name" in csv
