"""Holes an adversarial test found (issue 11 §4), each proven over real HTTP against the served app where
the hole is on the wire. One Stack per engine serves the module."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

import httpx
import pytest

from tests.admin_helpers import Browser, boss, count, logged_in, module_database, stack, start_stack  # noqa: F401 (fixtures)
from tests.cli_helpers import lipameter, with_database

PHONES = iter(range(712000100, 712999999))


def pay(stack, **kw) -> httpx.Response:
    """A payment from a phone of its own (one prompt may wait per phone)."""
    return stack.pay(phone=f"0{next(PHONES)}", **kw)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- deeply nested JSON ---------------------------------------------------------------------------

def test_deeply_nested_json_is_a_clear_400_on_every_json_endpoint(stack):
    deep = '{"amount": 100, "phoneNumber": "0712345678", "meterId": "A101", "x": ' + nested(1000) + "}"
    answer = stack.client.post("/mpesa/payments", content=deep, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["code"] == "json_too_deep", answer.text
    callbacks = count(stack, "mpesa_callbacks")
    callback = '{"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "ResultCode": 0, "x": ' + nested(1000) + "}}}"
    answer = httpx.post(stack.callback_url, content=callback, timeout=20)
    assert answer.status_code == 400, answer.text
    assert count(stack, "mpesa_callbacks") == callbacks
    assert pay(stack).status_code == 200


def test_a_stored_nested_callback_never_breaks_the_dashboard(stack, boss):
    payment_id = pay(stack).json()["paymentId"]
    for depth in (900, 5000):  # 900 parses but cannot be pretty-printed; 5000 does not parse
        stack.sql("INSERT INTO mpesa_callbacks (received_at, source, body, payment_id, outcome) "
                  "VALUES (:at, 'attacker', :body, :pid, 'malformed')",
                  at=datetime.now(UTC), body='{"Body": ' + nested(depth) + "}", pid=payment_id)
    page = boss.page(f"/admin/payments/{payment_id}")
    assert page.status_code == 200 and "[[[[" in page.text
    assert boss.page("/admin").status_code == 200


# --- X-Forwarded-For over several header lines ----------------------------------------------------

def test_forwarded_for_is_read_across_all_header_lines_from_the_right(stack):
    # The client sends its own line; the trusted proxy (127.0.0.1 here) appends the real address as a
    # second line. The address that counts is the one our proxy saw, never the client's claim.
    spoofed = [("X-Forwarded-For", "198.51.100.66"), ("X-Forwarded-For", "203.0.113.41")]
    with Browser(stack) as client:
        client.page("/admin/login")
        answer = client.post("/admin/login", data={"csrf": client.token, "username": "xff-probe",
                                                   "password": "guess-guess-guess"}, headers=spoofed)
        assert answer.status_code == 401
    assert [row.address for row in stack.sql("SELECT address FROM login_attempts WHERE username = 'xff-probe'")] \
        == ["203.0.113.41"]


# --- CSV ------------------------------------------------------------------------------------------

def test_csv_quotes_semicolons_and_guards_formulas(stack, boss):
    pay(stack, description="Rent; water")
    pay(stack, description="-2+3;=1")
    text = boss.page("/admin/payments.csv").text
    assert ',"Rent; water"' in text  # a spreadsheet in a `;` locale keeps it one cell
    assert ',"\'-2+3;=1"' in text
    assert ",Rent; water" not in text


# --- dashboard and CLI input ----------------------------------------------------------------------

@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
def test_far_dates_are_a_clear_400_not_a_500(stack, boss, day):
    for path in (f"/admin/ledger?from={day}", f"/admin/ledger?to={day}", f"/admin/payments?to={day}",
                 f"/admin/payments.csv?from={day}", f"/admin/ledger.csv?to={day}"):
        answer = boss.page(path)
        assert answer.status_code == 400 and "between" in answer.text, (path, answer.status_code)


@pytest.mark.parametrize("price", ["1e30", "1E+2", "\uff11\uff10\uff10", "100000"])
def test_absurd_or_exotic_prices_are_refused_and_change_nothing(stack, boss, price):
    boss.page("/admin/meters/A101")
    before = stack.sql("SELECT price_per_kwh FROM meters WHERE number = 'A101'")[0].price_per_kwh
    answer = boss.form("/admin/meters/A101/price", price=price, reason="attack")
    assert answer.status_code == 422 and "price" in answer.text, answer.status_code
    assert stack.sql("SELECT price_per_kwh FROM meters WHERE number = 'A101'")[0].price_per_kwh == before


@pytest.mark.parametrize("amount", ["1E+2", "\uff11\uff10\uff10", "1e30", "100000000"])
def test_exotic_manual_amounts_are_refused_and_credit_nothing(stack, boss, amount):
    boss.page("/admin/meters/A101")
    topups = count(stack, "topups")
    answer = boss.form("/admin/meters/A101/topup", amount=amount, reason="attack")
    assert answer.status_code == 422 and "amount" in answer.text, answer.status_code
    assert count(stack, "topups") == topups


@pytest.mark.parametrize("amount", ["1E+2", "\uff11\uff10\uff10", "\u0661\u0660\u0660"])
def test_exotic_api_amounts_are_refused(stack, amount):
    answer = pay(stack, amount=amount)
    assert answer.status_code == 422 and answer.json()["code"] == "invalid_amount", answer.text


# --- one device, one active meter -----------------------------------------------------------------

def test_a_second_meter_on_the_same_device_is_refused(stack, boss):
    boss.page("/admin/meters")
    meters = count(stack, "meters")
    answer = boss.form("/admin/meters", number="TWIN1", name="Twin of A101", device_id="dev-a101", profile="seed")
    assert answer.status_code == 409 and "dev-a101 is already meter A101" in answer.text, answer.status_code
    assert count(stack, "meters") == meters


def test_the_database_refuses_two_active_meters_on_one_device(stack):
    import sqlalchemy.exc

    row = stack.sql("SELECT * FROM meters WHERE number = 'A101'")[0]._mapping
    insert = ("INSERT INTO meters (id, number, name, device_id, profile, active, dp_specs, created_at) "
              "VALUES (:id, :number, 'twin', 'dev-a101', 'seed', :active, :specs, :at)")
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        stack.sql(insert, id="twin-1", number="TWIN2", active=True, specs="{}", at=row["created_at"])
    stack.sql(insert, id="twin-2", number="OLD2", active=False, specs="{}", at=row["created_at"])  # retired: fine
    stack.sql("DELETE FROM meters WHERE id = 'twin-2'")


# --- logs -----------------------------------------------------------------------------------------

def test_no_log_line_carries_the_payers_number_inside_a_checkout_id(stack, caplog):
    import logging

    caplog.set_level(logging.INFO)
    answer = pay(stack)
    assert answer.status_code == 200
    checkout_id = answer.json()["checkoutRequestId"]
    stack.wait_for(answer.json()["paymentId"], lambda p: p["status"] != "PENDING")
    wait = [r for r in caplog.records if r.name.startswith("lipameter") and "callback" in r.getMessage()]
    assert wait, "the callback was logged"
    digits = checkout_id[-9:]  # Daraja ends the id with the payer's number
    leaked = [r.getMessage() for r in caplog.records if digits in r.getMessage()]
    assert not leaked, leaked


# --- sessions -------------------------------------------------------------------------------------

def lipameter_admin(stack, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return lipameter("admin", *args, env=with_database(stack.database_url), stdin=stdin)


def test_logout_revokes_the_cookie_server_side(stack):
    from tests.admin_helpers import add_user

    add_user(stack.database_url, "leaver", "admin", "leaver-password-1")
    client = Browser(stack)
    assert client.login("leaver", "leaver-password-1").status_code == 303
    stolen = client.cookies.get("lipameter_admin")
    assert client.page("/admin").status_code == 200
    assert client.form("/admin/logout").status_code == 303
    client.close()
    with Browser(stack, cookies={"lipameter_admin": stolen}) as replay:  # a copy taken before logout
        assert replay.page("/admin").status_code == 303


def test_cli_disables_a_user_changes_a_password_and_a_role(stack):
    from tests.admin_helpers import add_user

    add_user(stack.database_url, "temp", "admin", "temp-password-11")
    client = Browser(stack)
    assert client.login("temp", "temp-password-11").status_code == 303
    assert "Add a meter" in client.page("/admin/meters").text

    made = lipameter_admin(stack, "role", "--username", "temp", "--role", "viewer")
    assert made.returncode == 0 and "temp is now viewer" in made.stdout, made.stderr
    assert "Add a meter" not in client.page("/admin/meters").text  # the next request already sees it

    made = lipameter_admin(stack, "password", "--username", "temp", "--password-stdin", stdin="temp-password-22\n")
    assert made.returncode == 0 and "temp-password-22" not in made.stdout, made.stderr
    assert client.page("/admin").status_code == 303  # every session of the old password is over
    assert client.login("temp", "temp-password-11").status_code == 401
    assert client.login("temp", "temp-password-22").status_code == 303
    assert client.page("/admin").status_code == 200

    made = lipameter_admin(stack, "disable", "--username", "temp")
    assert made.returncode == 0 and "temp disabled" in made.stdout, made.stderr
    assert client.page("/admin").status_code == 303
    assert client.login("temp", "temp-password-22").status_code == 401
    client.close()
    audit = [row.action for row in stack.sql("SELECT action FROM audit_log WHERE target = 'temp' ORDER BY id")]
    assert audit == ["create_admin_user", "set_admin_role", "set_admin_password", "disable_admin_user"]

    unknown = lipameter_admin(stack, "disable", "--username", "nobody")
    assert unknown.returncode == 2 and "no dashboard user 'nobody'" in unknown.stderr
    bad = lipameter_admin(stack, "role", "--username", "temp", "--role", "root")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


# --- login throttle -------------------------------------------------------------------------------

def test_wrong_passwords_from_elsewhere_do_not_lock_the_real_user_out(stack):
    from tests.admin_helpers import add_user

    add_user(stack.database_url, "victim", "admin", "victim-password-1")
    with Browser(stack, headers={"X-Forwarded-For": "203.0.113.50"}) as attacker:
        answers = [attacker.login("victim", f"guess-number-{n}").status_code for n in range(8)]
        assert answers[:3] == [401, 401, 401] and set(answers[3:]) == {429}, answers
        assert attacker.login("victim", "victim-password-1").status_code == 429  # this pair waits
    with Browser(stack, headers={"X-Forwarded-For": "198.51.100.20"}) as victim:
        assert victim.login("victim", "victim-password-1").status_code == 303
        assert victim.page("/admin").status_code == 200


# --- concurrent Idempotency-Key replays -----------------------------------------------------------

def test_concurrent_replays_of_one_idempotency_key_get_the_result_or_in_progress(stack):
    from concurrent.futures import ThreadPoolExecutor

    stack.daraja.slow_next_pushes(1, 2.0)  # the first request is in flight for two seconds
    phone, key = f"0{next(PHONES)}", "replay-under-load-1"

    def send(_):
        return stack.pay(phone=phone, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) <= {200, 409} and statuses.count(200) >= 1, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["code"] == "idempotency_in_progress" and int(answer.headers["retry-after"]) >= 1
    assert len({a.json()["paymentId"] for a in answers if a.status_code == 200}) == 1
    assert count(stack, "payments", "idempotency_key = :key", key=key) == 1
    again = send(0)  # once the first is answered, a replay gets its result
    assert again.status_code == 200 and again.json()["message"] == "Payment already initiated"


# --- unbounded tables -----------------------------------------------------------------------------

def test_one_phone_cannot_open_sessions_without_end(stack):
    from tests.ussd_helpers import Phone
    from ussd.hop import MAX_NEW_SESSIONS_PER_HOUR

    phone = "+254745000999"
    screens = [Phone(stack.url, phone).post("") for _ in range(MAX_NEW_SESSIONS_PER_HOUR + 5)]
    assert all(screen.startswith("CON ") for screen in screens[:MAX_NEW_SESSIONS_PER_HOUR])
    assert all(screen.startswith("END ") and "later" in screen for screen in screens[MAX_NEW_SESSIONS_PER_HOUR:])
    assert count(stack, "ussd_sessions", "phone = '254745000999'") == MAX_NEW_SESSIONS_PER_HOUR


def test_the_sweep_prunes_old_login_attempts_and_abandoned_ussd_sessions(stack):
    from datetime import timedelta

    from tests.admin_helpers import wait_until

    old = datetime.now(UTC) - timedelta(days=3)
    stack.sql("INSERT INTO login_attempts (at, username, address, success) VALUES (:at, 'sweepme', '10.9.9.9', :no)",
              at=old, no=False)
    session = ("INSERT INTO ussd_sessions (session_id, phone, state, last_text, last_answer, hops, ended, "
               "payment_id, created_at, updated_at) VALUES (:sid, '254745000888', '{}', '', 'END x', 1, :yes, "
               ":pid, :at, :at)")
    stack.sql(session, sid="sweep-abandoned", pid=None, at=old, yes=True)
    stack.sql(session, sid="sweep-paid", pid="some-payment", at=old, yes=True)
    wait_until(lambda: count(stack, "login_attempts", "username = 'sweepme'") == 0
               and count(stack, "ussd_sessions", "session_id = 'sweep-abandoned'") == 0, what="the sweep")
    assert count(stack, "ussd_sessions", "session_id = 'sweep-paid'") == 1  # kept a week for support


def test_a_throttled_address_does_not_grow_the_attempts_table_without_end(stack):
    from core.admin.auth import MAX_KEPT_FAILURES_PER_ADDRESS

    with Browser(stack, headers={"X-Forwarded-For": "203.0.113.99"}) as flooder:
        flooder.page("/admin/login")
        for n in range(MAX_KEPT_FAILURES_PER_ADDRESS + 10):
            assert flooder.form("/admin/login", username=f"u{n}", password="x" * 12).status_code in (401, 429)
    assert count(stack, "login_attempts", "address = '203.0.113.99'") <= MAX_KEPT_FAILURES_PER_ADDRESS + 1
