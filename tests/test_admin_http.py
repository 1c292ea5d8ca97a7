"""The dashboard's rules over real HTTP, on SQLite and PostgreSQL: who may see and do what, every form's
validation, and that refused input changes nothing and credits nothing. One Stack per engine."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.admin_helpers import (  # noqa: F401 (fixtures)
    Browser,
    boss,
    count,
    failed_payment,
    logged_in,
    module_database,
    stack,
    start_stack,
    wait_until,
    watcher,
)


def snapshot(stack) -> tuple:
    """Everything a refused form must leave alone."""
    return (count(stack, "topups"), count(stack, "audit_log"), count(stack, "jobs"), count(stack, "meter_access"),
            count(stack, "tenants"), count(stack, "meters"), stack.tuya.total_credits("dev-a101"))


# --- access ---------------------------------------------------------------------------------------

def test_anonymous_is_sent_to_login_and_cannot_post(stack):
    with Browser(stack) as anonymous:
        answer = anonymous.page("/admin/meters/A101")
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/login?next=/admin/meters/A101"
        before = snapshot(stack)
        answer = anonymous.form("/admin/meters/A101/topup", amount="100", reason="free money")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/login")
        assert anonymous.page("/admin/payments.csv").status_code == 303
    assert snapshot(stack) == before


def test_login_sets_a_hardened_cookie_renewed_at_login_and_logout(stack):
    with Browser(stack) as client:
        login_page = client.page("/admin/login")
        before = login_page.cookies.get("lipameter_admin")
        anonymous_token = client.token
        assert "HttpOnly" in login_page.headers["set-cookie"]
        answer = client.login("boss")
        cookie = answer.headers["set-cookie"]
        assert answer.status_code == 303 and answer.headers["location"] == "/admin"
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/admin" in cookie
        assert answer.cookies.get("lipameter_admin") not in (None, before)
        overview = client.page("/admin")
        assert overview.status_code == 200 and "boss" in overview.text
        assert client.token != anonymous_token  # a token planted before login is worthless after it
        assert overview.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in overview.headers[
            "content-security-policy"]
        answer = client.form("/admin/logout")
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/login"
        assert "logged out" in client.page("/admin/login").text
        assert client.page("/admin").status_code == 303


def test_wrong_password_and_forged_cookie(stack):
    with Browser(stack) as client:
        answer = client.login("boss", "not-the-password")
        assert answer.status_code == 401 and "wrong username or password" in answer.text
        assert client.login("nobody", "whatever-it-is").status_code == 401
    with Browser(stack, cookies={"lipameter_admin": "eyJ1IjoiYm9zcyJ9.forged.signature"}) as forged:
        assert forged.page("/admin").status_code == 303


def test_login_without_csrf_token_is_refused(stack):
    with Browser(stack) as client:
        client.page("/admin/login")
        answer = client.form("/admin/login", csrf=False, username="boss", password="boss-password-123")
        assert answer.status_code == 403 and "expired" in answer.text
        assert client.page("/admin").status_code == 303


def test_failed_logins_are_throttled_per_username_and_address(stack):
    from tests.admin_helpers import add_user

    add_user(stack.database_url, "target", "viewer", "target-password-1")
    with Browser(stack) as client:
        for _ in range(3):
            assert client.login("target", "guess-guess-guess").status_code == 401
        answer = client.login("target", "target-password-1")  # the right password, too soon
        assert answer.status_code == 429 and "too many failed logins; wait 1 minute" in answer.text
    with Browser(stack) as other:  # the same address; another user is unaffected
        assert other.login("watcher").status_code == 303
    assert count(stack, "login_attempts", "username = 'target' AND success = :no", no=False) == 4


def test_failed_logins_are_throttled_per_address(stack):
    with Browser(stack, headers={"X-Forwarded-For": "203.0.113.7"}) as sprayer:
        for n in range(20):
            assert sprayer.login(f"spray-{n}", "guess-guess-guess").status_code == 401
        assert sprayer.login("boss").status_code == 429
    with Browser(stack, headers={"X-Forwarded-For": "198.51.100.9"}) as elsewhere:
        assert elsewhere.login("boss").status_code == 303
    assert count(stack, "login_attempts", "address = '203.0.113.7'") == 21


def test_viewer_sees_pages_but_no_forms_and_cannot_post(stack, watcher):
    for path in ("/admin", "/admin/meters", "/admin/meters/A101", "/admin/payments", "/admin/topups",
                 "/admin/tenants", "/admin/ledger", "/admin/audit", "/admin/payments.csv", "/admin/ledger.csv"):
        answer = watcher.page(path)
        assert answer.status_code == 200, path
        assert "/topup\"" not in answer.text and "Add a meter" not in answer.text and "Add a tenant" not in answer.text
    assert watcher.page("/admin/meters/A101/clear").status_code == 403
    before = snapshot(stack)
    watcher.page("/admin/meters/A101")
    for path, fields in (("/admin/meters/A101/topup", {"amount": "100", "reason": "x"}),
                         ("/admin/meters/A101/price", {"price": "30"}),
                         ("/admin/meters/A101/prepayment", {"state": "off"}),
                         ("/admin/meters/A101/clear", {"confirm": "yes"}),
                         ("/admin/meters", {"number": "V1", "name": "v", "device_id": "dev-a101"}),
                         ("/admin/tenants", {"phone": "0722000111"})):
        answer = watcher.form(path, **fields)
        assert answer.status_code == 403 and "can look but not change" in answer.text, path
    assert snapshot(stack) == before


def test_missing_or_wrong_csrf_token_changes_nothing(stack, boss):
    before = snapshot(stack)
    answer = boss.form("/admin/meters/A101/topup", csrf=False, amount="100", reason="no token")
    assert answer.status_code == 403 and "did not come from this dashboard" in answer.text
    answer = boss.post("/admin/meters/A101/topup", data={"csrf": "x" * 43, "amount": "100", "reason": "forged"})
    assert answer.status_code == 403
    assert snapshot(stack) == before


# --- forms ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("amount, reason, message", [
    ("0", "outage refund", "more than 0"), ("-50", "outage refund", "more than 0"),
    ("abc", "outage refund", "must be a number"), ("", "outage refund", "enter the amount"),
    ("100", "", "reason is required"), ("100", "   ", "reason is required"),
    ("1e9", "big", "like 1250.50"),  # an exponent is not how a person writes an amount
    ("100000", "big", "is outside 0.01..99999.99 KES"),
])
def test_manual_topup_validation(stack, boss, amount, reason, message):
    before = snapshot(stack)
    boss.page("/admin/meters/A101")
    answer = boss.form("/admin/meters/A101/topup", amount=amount, reason=reason)
    assert answer.status_code == 422, answer.text
    assert message in answer.text
    assert f'value="{amount}"' in answer.text  # the form comes back as typed
    assert snapshot(stack) == before


def test_manual_topup_goes_through_the_engine_and_is_audited(stack, boss):
    credits = stack.tuya.total_credits("dev-a101")
    boss.page("/admin/meters/A101")
    answer = boss.form("/admin/meters/A101/topup", amount="1250.50", reason="refund for the outage")
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/meters/A101"
    assert "queued" in boss.page("/admin/meters/A101").text
    wait_until(lambda: stack.tuya.total_credits("dev-a101") == credits + Decimal("1250.50"), what="manual credit")
    audit = stack.sql("SELECT actor, reason, details FROM audit_log WHERE action = 'manual_topup'")
    assert [(row.actor, row.reason) for row in audit] == [("boss", "refund for the outage")]
    page = boss.page("/admin/audit").text
    assert "manual topup" in page and "refund for the outage" in page
    wait_until(lambda: "KES 1,250.50" in boss.page("/admin/topups?status=applied").text, what="applied in list")


def test_unknown_ids_are_404(stack, boss):
    for path in ("/admin/meters/NOPE", "/admin/payments/not-a-payment", "/admin/topups/nope",
                 "/admin/tenants/nope", "/admin/meters/NOPE/clear"):
        assert boss.page(path).status_code == 404, path
    before = snapshot(stack)
    boss.page("/admin")
    assert boss.form("/admin/meters/NOPE/topup", amount="100", reason="r").status_code == 404
    assert boss.form("/admin/topups/nope/retry", reason="r").status_code == 404
    assert boss.form("/admin/reviews/nope/resolve", reason="r", action="dismiss").status_code == 404
    assert boss.form("/admin/tenants/nope/link", meter="A101").status_code == 404
    assert snapshot(stack) == before


def test_retry_failed_topup_then_forged_retry_of_applied_one_is_refused(stack, boss):
    ref = failed_payment(stack, amount=600)
    topup_id = stack.sql("SELECT id FROM topups WHERE payment_id = :p", p=ref)[0].id
    page = boss.page(f"/admin/payments/{ref}")
    assert "Retry this top-up" in page.text and "Tuya error 1106" in page.text
    assert boss.form(f"/admin/topups/{topup_id}/retry", reason="").status_code == 422
    credits = stack.tuya.total_credits("dev-a101")
    answer = boss.form(f"/admin/topups/{topup_id}/retry", reason="permission restored")
    assert answer.status_code == 303 and answer.headers["location"] == f"/admin/payments/{ref}"
    stack.wait_for(ref, lambda p: p["topUpStatus"] == "APPLIED")
    assert stack.tuya.total_credits("dev-a101") == credits + 600
    before = snapshot(stack), stack.sql("SELECT attempts, status FROM topups WHERE id = :t", t=topup_id)
    answer = boss.form(f"/admin/topups/{topup_id}/retry", reason="again please")
    assert answer.status_code == 409 and "only a failed top-up can be retried" in answer.text
    assert (snapshot(stack), stack.sql("SELECT attempts, status FROM topups WHERE id = :t", t=topup_id)) == before


def test_resolve_needs_a_reason_and_a_known_decision(stack, boss):
    ref = failed_payment(stack, amount=300)
    before = snapshot(stack)
    boss.page(f"/admin/payments/{ref}")
    answer = boss.form(f"/admin/reviews/{ref}/resolve", reason="", action="credit")
    assert answer.status_code == 422 and "reason is required" in answer.text
    answer = boss.form(f"/admin/reviews/{ref}/resolve", reason="checked", action="credit")
    assert answer.status_code == 409 and "not waiting for review" in answer.text
    assert snapshot(stack) == before


def test_meter_settings_forms(stack, boss):
    boss.page("/admin/meters/A101")
    before = snapshot(stack)
    assert boss.form("/admin/meters/A101/price", price="cheap").status_code == 422
    assert boss.form("/admin/meters/A101/price", price="").status_code == 422
    assert boss.form("/admin/meters/A101/prepayment", state="maybe").status_code == 422
    answer = boss.form("/admin/meters/A101/clear", reason="no tick")
    assert answer.status_code == 422 and "Tick the box" in answer.text
    assert snapshot(stack) == before
    assert boss.form("/admin/meters/A101/price", price="27.5", reason="new tariff").status_code == 303
    assert boss.form("/admin/meters/A101/prepayment", state="on").status_code == 303
    assert "Clear meter A101?" in boss.page("/admin/meters/A101/clear").text
    assert boss.form("/admin/meters/A101/clear", confirm="yes", reason="tenant moved out").status_code == 303
    actions = [row.action for row in stack.sql("SELECT action FROM audit_log WHERE actor = 'boss' ORDER BY id")]
    assert actions[-3:] == ["set_price", "prepayment_switch", "clear"]
    price = stack.sql("SELECT price_per_kwh FROM meters WHERE number = 'A101'")[0].price_per_kwh
    assert Decimal(price) == Decimal("27.5")


def test_add_meter_checks_the_device(stack, boss):
    boss.page("/admin/meters")
    before = snapshot(stack)
    answer = boss.form("/admin/meters", number="C1", name="Flat C1", device_id="no-such-device", profile="seed")
    assert answer.status_code == 502 and "no permission" in answer.text
    answer = boss.form("/admin/meters", number="C1", name="Flat C1", device_id="dev-b201", profile="seed")
    assert answer.status_code == 422 and "does not fit profile seed" in answer.text
    answer = boss.form("/admin/meters", number="bad number!", name="x", device_id="dev-a101")
    assert answer.status_code == 422 and 'value="bad number!"' in answer.text
    assert snapshot(stack) == before
    stack.tuya.add_device("dev-c1", "seed", balance="10", price="25")
    answer = boss.form("/admin/meters", number="C1", name="Flat C1", device_id="dev-c1", profile="seed", price="25")
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/meters/C1"
    assert "Flat C1" in boss.page("/admin/meters/C1").text
    assert boss.form("/admin/meters", number="C1", name="again", device_id="dev-c1").status_code == 409


def test_tenants_add_link_unlink(stack, boss):
    boss.page("/admin/tenants")
    before = snapshot(stack)
    answer = boss.form("/admin/tenants", phone="12345", name="Nobody")
    assert answer.status_code == 422 and "Kenyan mobile number" in answer.text
    assert boss.form("/admin/tenants", phone="").status_code == 422
    assert boss.form("/admin/tenants", phone="0722000111", meters="NOPE").status_code == 404
    assert snapshot(stack) == before
    answer = boss.form("/admin/tenants", phone="0722000111", name="Otieno", meters="B201")
    assert answer.status_code == 303
    tenant_page = answer.headers["location"]
    page = boss.page(tenant_page).text
    assert "254722000111" in page and "B201" in page and "not linked" in page
    assert boss.form(f"{tenant_page}/link", meter="NOPE").status_code == 404
    assert boss.form(f"{tenant_page}/link", meter="A101").status_code == 303
    assert boss.form(f"{tenant_page}/unlink", meter="B201").status_code == 303
    assert boss.form(f"{tenant_page}/unlink", meter="B201").status_code == 404
    numbers = stack.sql("SELECT m.number FROM meter_access a JOIN meters m ON m.id = a.meter_id "
                        "JOIN tenants t ON t.id = a.tenant_id WHERE t.phone = '254722000111'")
    assert [row.number for row in numbers] == ["A101"]
    actions = [r.action for r in stack.sql("SELECT action FROM audit_log ORDER BY id")]
    assert actions[-2:] == ["link_meter", "unlink_meter"]


def test_ledger_and_csv_exports(stack, boss):
    answer = stack.pay(amount=150, meter="A101", description="=HYPERLINK(\"http://evil\")")
    stack.wait_for(answer.json()["paymentId"], lambda p: p["topUpStatus"] == "APPLIED")
    page = boss.page("/admin/ledger").text
    assert "KES 150" in page or "KES 1," in page
    assert "credited &gt; paid" not in page
    rows = stack.sql("SELECT status FROM payments")
    ledger = boss.page("/admin/ledger.csv")
    assert ledger.status_code == 200 and ledger.headers["content-type"].startswith("text/csv")
    lines = ledger.text.strip().splitlines()
    assert lines[0] == "meter_number,meter_name,paid,credited,manual,waiting,failed,in_review,pending"
    total = dict(zip(lines[0].split(","), lines[-1].split(","), strict=False))
    assert total["meter_number"] == "TOTAL" and Decimal(total["credited"]) <= Decimal(total["paid"])
    payments = boss.page("/admin/payments.csv?status=completed")
    assert payments.status_code == 200 and len(payments.text.strip().splitlines()) == 1 + sum(
        1 for row in rows if row.status == "completed")
    assert "attachment" in payments.headers["content-disposition"]
    assert "'=HYPERLINK" in payments.text  # a spreadsheet shows it, does not run it
    assert boss.page("/admin/ledger?from=2026-02-30").status_code == 400
    assert boss.page("/admin/payments?status=bogus").status_code == 400
    assert boss.page("/admin/payments?from=2026-12-02&to=2026-12-01").status_code == 400


def test_overview_numbers_link_to_their_lists(stack, boss):
    page = boss.page("/admin").text
    for link in ("/admin/payments?status=active", "/admin/topups?status=failed", "/admin/topups?status=applied",
                 "/admin/topups?status=queued", "/admin/topups?status=needs_review", "/admin/meters",
                 "/admin/payments?status=needs_review"):
        assert f'href="{link}"' in page, link
    assert "Money in today" in page and "KES" in page


def test_payment_in_review_is_resolved_from_its_page(stack, boss, watcher):
    stack.daraja.script_phone("254712345678", "success", paid_amount=1)  # paid KES 1 of 400: unprovable
    ref = stack.pay(amount=400).json()["paymentId"]
    stack.wait_for(ref, lambda p: p["status"] == "NEEDS_REVIEW")
    overview = boss.page("/admin").text
    assert f'/admin/payments/{ref}' in overview  # in "Waiting for a person"
    assert "Resolve this review" not in watcher.page(f"/admin/payments/{ref}").text
    page = boss.page(f"/admin/payments/{ref}").text
    assert "Resolve this review" in page and "KES 400" in page
    before = snapshot(stack)
    answer = boss.form(f"/admin/reviews/{ref}/resolve", reason="statement shows 400", action="applied")
    assert answer.status_code == 422 and "credit or dismiss" in answer.text
    assert snapshot(stack) == before
    credits = stack.tuya.total_credits("dev-a101")
    answer = boss.form(f"/admin/reviews/{ref}/resolve", reason="statement shows 400", action="credit")
    assert answer.status_code == 303
    stack.wait_for(ref, lambda p: p["topUpStatus"] == "APPLIED")
    assert stack.tuya.total_credits("dev-a101") == credits + 400
    audit = stack.sql("SELECT actor, reason FROM audit_log WHERE action = 'resolve_payment'")
    assert [(row.actor, row.reason) for row in audit] == [("boss", "statement shows 400")]
    assert "credited &gt; paid" not in boss.page("/admin/ledger").text


def test_manual_topup_has_its_own_page(stack, boss):
    topup_id = stack.sql("SELECT id FROM topups WHERE payment_id IS NULL")[0].id
    page = boss.page(f"/admin/topups/{topup_id}")
    assert page.status_code == 200 and "Manual top-up" in page.text and "refund for the outage" in page.text
    paid = stack.sql("SELECT id, payment_id FROM topups WHERE payment_id IS NOT NULL")[0]
    answer = boss.page(f"/admin/topups/{paid.id}")
    assert answer.status_code == 303 and answer.headers["location"] == f"/admin/payments/{paid.payment_id}"


def test_meters_show_live_balance_offline_meters_and_stay_fast(stack, boss):
    import time

    page = boss.page("/admin/meters").text
    active = count(stack, "meters", "active = :yes", yes=True)
    assert active >= 2 and page.count(">live<") == active  # read now; OFF1 is inactive and not asked
    stack.tuya.set_fault("dev-b201", "offline")
    try:
        assert "offline" in boss.page("/admin/meters").text
        assert boss.page("/admin").text.split("Meters offline</span><strong>")[1].startswith("1<")
        stack.tuya.set_fault("dev-b201", "slow", n=1, seconds=3)
        started = time.monotonic()
        page = boss.page("/admin/meters/B201").text
        assert time.monotonic() - started < 2.5
        assert "last read" in page and "ago" in page  # the last known balance, with its age
    finally:
        stack.tuya.clear_faults("dev-b201")
    boss.page("/admin/meters")
    assert boss.page("/admin").text.split("Meters offline</span><strong>")[1].startswith("0<")


def test_manual_topup_form_submitted_twice_credits_once(stack, boss):
    import re

    page = boss.page("/admin/meters/A101").text
    key = re.search(r'name="request_key" value="([0-9a-f]{32})"', page).group(1)
    before = count(stack, "topups", "payment_id IS NULL")
    for _ in range(2):  # a double click, or the browser re-sending the form
        answer = boss.form("/admin/meters/A101/topup", amount="75", reason="double click", request_key=key)
        assert answer.status_code == 303
    assert count(stack, "topups", "payment_id IS NULL") == before + 1
