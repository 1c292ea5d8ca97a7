"""USSD through the real app: uvicorn, the in-process worker, the Daraja sandbox over real HTTP, hops
posted exactly as Africa's Talking posts them (cumulative `text`), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.stack import Stack
from tests.ussd_helpers import AKINYI, OTIENO, STRANGER, WANJIKU, Phone, as_datetime, seed_ussd
from ussd.hop import UssdConfig

PUSH_DELAY_S = 1.2


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url, ussd_config=UssdConfig(push_delay_s=PUSH_DELAY_S))
    seed_ussd(database_url)
    yield stack
    stack.stop()


def count(stack: Stack, table: str, where: str = "1=1") -> int:
    return stack.sql(f"SELECT count(*) AS n FROM {table} WHERE {where}")[0].n


def assert_sms_receipt(stack: Stack, payment_id: str, language: str) -> None:
    """The payer gets exactly one SMS, in their language, naming the meter, the amount, the M-Pesa
    receipt and the new balance."""
    paid = stack.wait_for(payment_id, lambda p: p["topUpStatus"] == "APPLIED", timeout=15)
    phone = "+" + paid["phoneNumber"]
    deadline = time.monotonic() + 10
    while not stack.sms.messages(to=phone):
        assert time.monotonic() < deadline, "no SMS receipt"
        time.sleep(0.05)
    [sms] = stack.sms.messages(to=phone)
    assert paid["mpesaReceiptNumber"] in sms.message and paid["meterNumber"] in sms.message
    assert f"KES {paid['amount']:,}" in sms.message
    assert ("imepokelewa" in sms.message) == (language == "sw")


def buy(phone: Phone, *replies: str) -> str:
    phone.dial()
    return phone.send(*replies)


def test_ussd_purchase_pushes_after_the_session_and_completes(stack):
    wanjiku, otieno = Phone(stack.url, WANJIKU), Phone(stack.url, OTIENO)
    assert wanjiku.dial().startswith("CON LipaMeter\n1. Buy electricity")
    assert wanjiku.send("1") == "CON Choose meter:\n1. A101 Flat A1\n2. A102 Flat A2, Kilimani Court\n" \
                                "3. Other meter\n0. Back 00. Home"
    assert wanjiku.send("1") == "CON Enter amount, KES 10-70,000:\nMeter A101 Flat A1\n0. Back 00. Home"
    assert wanjiku.send("500") == ("CON Confirm payment:\nMeter A101 Flat A1\nAmount KES 500\nPhone 0712345678\n"
                                   "1. Pay now\n2. Cancel\n3. Pay from other phone\n0. Back 00. Home")
    done = wanjiku.send("1")
    assert done.startswith("END You will get an M-Pesa prompt for KES 500 on 0712345678")
    # The session has ended and M-Pesa has not been asked yet: the prompt goes out from a job, later.
    assert stack.daraja.transactions == []
    payment = stack.sql("SELECT id, status, channel, idempotency_key, tenant_id, created_at FROM payments")[0]
    assert (payment.status, payment.channel, payment.idempotency_key) == ("requested", "ussd", f"ussd:{wanjiku.session_id}")
    assert payment.tenant_id is not None
    job = stack.sql("SELECT run_after FROM jobs WHERE kind = 'push_stk'")[0]
    # Both stamped from the same clock reading when the payment was recorded.
    assert (as_datetime(job.run_after) - as_datetime(payment.created_at)).total_seconds() >= PUSH_DELAY_S - 0.001
    assert wanjiku.retry() == done  # the gateway retried the confirm hop: same answer, no second payment

    sw = buy(otieno, "1", "1", "250", "1")  # Otieno's menus are in Swahili; B201 is his only meter
    assert sw.startswith("END Utapokea ombi la M-Pesa la KES 250 kwa 0722000111")

    for ref, amount, phone in ((payment.id, 500, "254712345678"), (None, 250, "254722000111")):
        ref = ref or stack.sql("SELECT id FROM payments WHERE phone = :p", p=phone)[0].id
        paid = stack.wait_for(ref, lambda p: p["status"] != "PENDING" and p["status"] != "REQUESTED", timeout=15)
        assert paid["status"] == "COMPLETED" and paid["amount"] == amount and paid["channel"] == "ussd"
        assert paid["topUpStatus"] in ("QUEUED", "SENDING", "APPLIED")  # the top-up engine takes it from here
        assert_sms_receipt(stack, ref, "en" if phone.endswith("678") else "sw")
    assert len(stack.daraja.transactions) == 2 and count(stack, "payments") == 2
    assert {t.account_reference for t in stack.daraja.transactions} == {"A101", "B201"}
    assert count(stack, "ussd_sessions", "payment_id IS NOT NULL") == 2
    assert 'lipameter_payments_started_total{channel="ussd"} 2.0' in httpx.get(f"{stack.url}/metrics").text


def test_pages_back_home_and_other_meters(stack):
    akinyi = Phone(stack.url, AKINYI)
    started = time.monotonic()
    akinyi.dial()
    first = akinyi.send("1")
    assert first.splitlines()[1:] == ["1. M01 Block 01", "2. M02 Block 02", "3. M03 Block 03",
                                      "4. M04 Block 04", "5. M05 Block 05", "6. Other meter",
                                      "98. More", "0. Back 00. Home"]
    assert "1. M06 " in akinyi.send("98") and "1. M11 " in akinyi.send("98")
    last = akinyi.screens[-1]
    assert "3. Other meter" in last and "98." not in last
    assert akinyi.send("98").startswith("CON Invalid choice.\nChoose meter:\n1. M11")
    assert "1. M06 " in akinyi.send("0")  # back: the previous page
    assert akinyi.send("2").startswith("CON Enter amount") and "M07" in akinyi.screens[-1]
    assert "1. M06 " in akinyi.send("0")
    assert akinyi.send("00").startswith("CON LipaMeter\n1. Buy")
    # Africa's Talking allows a hop a few seconds; we take a small fraction of that.
    assert (time.monotonic() - started) / len(akinyi.screens) < 0.5
    # Any meter by its number; typed lower case on a keypad is fine.
    assert akinyi.send("1", "6") == "CON Enter meter number:\n0. Back 00. Home"
    assert akinyi.send("NOPE").startswith("CON Meter NOPE not found.\nEnter meter number:")
    assert akinyi.send("OFF1").startswith("CON Meter OFF1 is not in service.")
    assert akinyi.send("a102").startswith("CON Enter amount, KES 10-70,000:\nMeter A102 Flat A2, Kilimani Court")
    assert akinyi.send("5").startswith("CON Whole KES 10-70,000 only.\nEnter amount")
    assert akinyi.send("500.5").startswith("CON Whole KES 10-70,000 only.")
    assert "Amount KES 700" in akinyi.send("700.0")
    assert akinyi.send("2") == "END Cancelled. Nothing was charged."
    assert count(stack, "payments") == 0


def test_swahili_menus_back_and_home(stack):
    otieno = Phone(stack.url, OTIENO)
    assert otieno.dial() == "CON LipaMeter\n1. Nunua umeme\n2. Angalia salio\n3. Malipo yangu\n4. Lugha"
    assert otieno.send("1") == "CON Chagua mita:\n1. B201 Shop 1\n2. Mita nyingine\n0. Rudi 00. Mwanzo"
    assert otieno.send("2") == "CON Weka nambari ya mita:\n0. Rudi 00. Mwanzo"
    assert otieno.send("HAKUNA").startswith("CON Mita HAKUNA haipatikani.")
    assert otieno.send("0").startswith("CON Chagua mita:")
    assert otieno.send("1", "abc").startswith("CON KES 10-70,000 bila senti.\nWeka kiasi, KES 10-70,000:")
    assert otieno.send("100").startswith("CON Thibitisha malipo:\nMita B201 Shop 1\nKiasi KES 100\nSimu 0722000111")
    assert otieno.send("00").startswith("CON LipaMeter\n1. Nunua umeme")
    assert otieno.send("2").startswith("CON Salio\nMita B201 Shop 1\n")  # his only meter: no list
    assert otieno.send("00", "3") == "CON Malipo ya mwisho:\nBado hakuna malipo.\n0. Rudi 00. Mwanzo"
    assert otieno.send("1").startswith("CON Chaguo si sahihi.\nMalipo ya mwisho:")
    assert otieno.send("x").startswith("CON Chaguo si sahihi.")
    assert otieno.send("*") == "END Makosa mengi mno. Tafadhali piga tena. Kwaheri."


def test_balance_payments_and_language(stack):
    paid = stack.pay(amount=250, phone="0712345678", meter="A101").json()["paymentId"]
    stack.wait_for(paid, lambda p: p["status"] == "COMPLETED")
    wanjiku = Phone(stack.url, WANJIKU)
    wanjiku.dial()
    assert wanjiku.send("2") == "CON Choose meter:\n1. A101 Flat A1\n2. A102 Flat A2, Kilimani Court\n0. Back 00. Home"
    balance = wanjiku.send("1")
    assert balance.startswith("CON Balance\nMeter A101 Flat A1\nKES ")
    assert ", 3 h ago\n" in balance or " now\n" in balance  # the top-up engine may have read it since
    assert wanjiku.send("1").startswith("CON Enter amount") and wanjiku.send("0") == balance
    assert wanjiku.send("00", "3").startswith("CON Last payments:\n")
    assert " KES 250 Paid A101\n" in wanjiku.screens[-1]
    assert wanjiku.send("0", "4") == "CON Choose language:\n1. English\n2. Kiswahili\n0. Back 00. Home"
    assert wanjiku.send("2") == ("CON Lugha imehifadhiwa.\nLipaMeter\n1. Nunua umeme\n2. Angalia salio\n"
                                 "3. Malipo yangu\n4. Lugha")
    assert stack.sql("SELECT language FROM tenants WHERE phone = '254712345678'")[0].language == "sw"
    assert Phone(stack.url, WANJIKU).dial().startswith("CON LipaMeter\n1. Nunua umeme")  # remembered
    # A stranger: no meters to list, buys by number, and becomes a tenant when choosing a language.
    stranger = Phone(stack.url, STRANGER)
    stranger.dial()
    assert stranger.send("2").startswith("CON No meter is linked to this phone.")
    assert stranger.send("0", "1") == "CON Enter meter number:\n0. Back 00. Home"
    assert count(stack, "tenants", "phone = '254746000333'") == 0
    stranger.send("00", "4", "2")
    assert stack.sql("SELECT language FROM tenants WHERE phone = '254746000333'")[0].language == "sw"


def test_bad_input_never_pays_and_never_fails(stack):
    p = Phone(stack.url, WANJIKU)
    p.dial()
    assert p.send("0").startswith("CON Invalid choice.\nLipaMeter")  # nothing to go back to
    assert p.send("abc").startswith("CON Invalid choice.")
    assert p.send("#") == "END Too many wrong entries. Please dial again. Goodbye."
    assert p.send("1") == "END This session has ended. Please dial again."
    for entry in ("*", "1#", "9" * 500):
        q = Phone(stack.url, WANJIKU)
        q.dial()
        assert q.send(entry).startswith("CON Invalid choice.\nLipaMeter")
    # An empty first reply posts `text=` again, which is exactly a retry of the first hop: same screen.
    q = Phone(stack.url, WANJIKU)
    assert q.dial() == q.send("")
    q = Phone(stack.url, WANJIKU)
    q.dial()
    assert q.send("1", "").startswith("CON Invalid choice.\nChoose meter:")
    q = Phone(stack.url, WANJIKU)
    q.dial()
    assert q.post("1*1").startswith("CON Invalid choice.")  # two answers typed as one reply
    assert q.send("1", "1", "999999999999999999999999").startswith("CON Whole KES 10-70,000 only.")
    # A session we never saw, arriving mid-path (or a shortcut ending in a confirm) never pays by itself.
    assert Phone(stack.url, WANJIKU).post("1*1*500*1").startswith("CON Confirm payment:")
    for odd in ("0712345678", "254712345678", "+254 712 345 678", "254-712-345-678"):
        assert Phone(stack.url, odd).dial().startswith("CON LipaMeter")
    for odd in ("+15551234567", "", "abc", "+254201234567", "+2547123456789999"):
        assert Phone(stack.url, odd).dial().startswith("END Sorry, LipaMeter works with Kenyan M-Pesa numbers only.")
    hijack = Phone(stack.url, OTIENO, session_id=q.session_id)  # someone else's phone on that session
    assert hijack.post(q.text + "*1").startswith("END ")
    for body in (b"", b"text=1", b'{"sessionId": "x"}', b"sessionId=" + b"x" * 200 + b"&text=",
                 b"sessionId=big&text=" + b"1" * 9000):
        answer = httpx.post(f"{stack.url}/ussd", content=body,
                            headers={"content-type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 200 and answer.text.startswith("END ") and len(answer.text) <= 160
    assert httpx.get(f"{stack.url}/ussd").status_code == 405
    assert count(stack, "payments") == 0 and count(stack, "jobs", "kind = 'push_stk'") == 0
    assert stack.daraja.transactions == []


def test_retried_and_racing_hops_pay_once(stack):
    p = Phone(stack.url, WANJIKU)
    first = p.dial()
    assert p.retry() == first
    assert p.send("1") == p.retry()
    p.send("2", "300")
    final_text = p.text + "*1"
    with ThreadPoolExecutor(8) as pool:  # the confirm hop, retried eight times at once
        answers = list(pool.map(lambda _: p.post(final_text), range(8)))
    assert len(set(answers)) == 1 and answers[0].startswith("END You will get an M-Pesa prompt for KES 300")
    assert count(stack, "payments") == 1 and count(stack, "jobs", "kind = 'push_stk'") == 1
    assert stack.sql("SELECT hops FROM ussd_sessions")[0].hops == 5  # dial, 1, 2, 300, 1: retries not counted
    payment = stack.sql("SELECT id FROM payments")[0].id
    assert stack.wait_for(payment, lambda d: d["status"] == "COMPLETED", timeout=15)["amount"] == 300
    assert len(stack.daraja.transactions) == 1
    # A new session from the same phone can buy again once the first prompt is answered.
    assert buy(Phone(stack.url, WANJIKU), "1", "1", "100", "1").startswith("END You will get an M-Pesa prompt")
    # …but not while that one's prompt is still waiting.
    assert buy(Phone(stack.url, WANJIKU), "1", "1", "100", "1").startswith("END An M-Pesa prompt is already waiting")
    assert count(stack, "payments") == 2


def test_end_of_session_reports_are_recorded(stack):
    p = Phone(stack.url, WANJIKU)
    p.dial()
    p.send("3")
    report = {"date": "2026-11-28 10:00:00", "sessionId": p.session_id, "serviceCode": "*384*1#",
              "networkCode": "63902", "phoneNumber": WANJIKU, "status": "Incomplete", "cost": "KES 0.0000",
              "durationInMillis": "11234", "hopsCount": "2", "input": "3", "lastAppResponse": "CON Last payments:",
              "errorMessage": ""}
    answer = httpx.post(f"{stack.url}/ussd/events", data=report)
    assert answer.status_code == 200 and answer.text == "OK"
    row = stack.sql("SELECT end_status, ended, end_report FROM ussd_sessions")[0]
    assert row.end_status == "Incomplete" and row.ended
    assert "254712345678" not in str(row.end_report) and "11234" in str(row.end_report)
    assert p.send("0").startswith("END This session has ended")  # the gateway said so: nothing more happens
    unknown = httpx.post(f"{stack.url}/ussd/events", data={**report, "sessionId": "never-seen", "status": "Failed",
                                                           "errorMessage": "timeout"})
    assert unknown.status_code == 200 and httpx.post(f"{stack.url}/ussd/events", content=b"junk").status_code == 200
    metrics = httpx.get(f"{stack.url}/metrics").text
    assert 'lipameter_ussd_sessions_ended_total{status="Incomplete"} 1.0' in metrics
    assert 'lipameter_ussd_hops_total{outcome="con"}' in metrics
    assert count(stack, "payments") == 0



def test_a_dialled_shortcut_runs_its_inputs_and_the_session_goes_on(stack):
    # `*384*1#` then `1*A101*500`: buy, meter A101 typed on the list, KES 500: the confirm screen, live.
    p = Phone(stack.url, WANJIKU)
    first = p.post("1*A101*500")
    assert first == ("CON Confirm payment:\nMeter A101 Flat A1\nAmount KES 500\nPhone 0712345678\n"
                     "1. Pay now\n2. Cancel\n3. Pay from other phone\n0. Back 00. Home")
    p.replies = ["1", "A101", "500"]
    assert p.retry() == first  # the gateway's retry of that first hop is a replay
    assert p.send("1").startswith("END You will get an M-Pesa prompt for KES 500 on 0712345678")
    assert count(stack, "payments") == 1
    # A shortcut that stops earlier leaves the session on that screen, in the caller's language.
    q = Phone(stack.url, OTIENO)
    assert q.post("1").startswith("CON Chagua mita:\n1. B201")
    q.replies = ["1"]
    assert q.send("1").startswith("CON Weka kiasi")
    # A wrong segment is a wrong entry, as if typed; three end the session politely.
    assert Phone(stack.url, WANJIKU).post("7").startswith("CON Invalid choice.\nLipaMeter")
    assert Phone(stack.url, WANJIKU).post("7*7*7") == "END Too many wrong entries. Please dial again. Goodbye."
    # A shortcut never confirms by itself: the rest after the confirm screen is dropped.
    r = Phone(stack.url, WANJIKU)
    assert r.post("1*1*500*1").startswith("CON Confirm payment:")
    assert count(stack, "payments") == 1 and count(stack, "jobs", "kind = 'push_stk'") == 1


def test_an_end_report_for_a_session_never_seen_is_accepted_quietly(stack):
    report = {"sessionId": "ATUid_never_seen", "phoneNumber": WANJIKU, "status": "Failed", "networkCode": "63902",
              "input": "1*A101*500", "errorMessage": "timeout"}
    answer = httpx.post(f"{stack.url}/ussd/events", data=report)
    assert answer.status_code == 200 and answer.text == "OK"
    assert count(stack, "ussd_sessions") == 0 and count(stack, "payments") == 0


def test_another_network_is_told_at_once_and_pays_from_a_safaricom_number_both_get_the_receipt(stack):
    # Wanjiku's number, but the gateway says this session is on Airtel (networkCode 63903).
    p = Phone(stack.url, WANJIKU)
    first = p.post("", networkCode="63903")
    assert first.startswith("CON M-Pesa prompts reach Safaricom lines only.\nLipaMeter")
    p.replies = ["1"]
    p.post(p.text, networkCode="63903")
    p.replies.append("1")
    p.post(p.text, networkCode="63903")
    p.replies.append("300")
    payer = p.post(p.text, networkCode="63903")
    assert payer == ("CON M-Pesa prompts reach Safaricom lines only.\nEnter the Safaricom number to pay from:\n"
                     "0. Back 00. Home")
    p.replies.append("0733000222")  # an Airtel number cannot get the prompt either
    assert p.post(p.text, networkCode="63903").startswith("CON Use a Safaricom M-Pesa number.\nEnter the Safaricom")
    p.replies.append("0722000111")  # Otieno, a relative on Safaricom, pays
    assert "Phone 0722000111\n1. Pay now\n2. Cancel\n3. Pay from other phone" in p.post(p.text, networkCode="63903")
    p.replies.append("1")
    assert p.post(p.text, networkCode="63903").startswith(
        "END You will get an M-Pesa prompt for KES 300 on 0722000111")
    payment = stack.sql("SELECT id, phone, tenant_id FROM payments")[0]
    wanjiku = stack.sql("SELECT id FROM tenants WHERE phone = '254712345678'")[0]
    assert payment.phone == "254722000111" and payment.tenant_id == wanjiku.id
    paid = stack.wait_for(payment.id, lambda q: q["status"] == "COMPLETED", timeout=15)
    assert [t.phone for t in stack.daraja.transactions] == ["254722000111"]
    deadline = time.monotonic() + 10
    while not (stack.sms.messages(to=WANJIKU) and stack.sms.messages(to="+254722000111")):
        assert time.monotonic() < deadline, "the receipt did not reach both"
        time.sleep(0.05)
    for to in (WANJIKU, "+254722000111"):
        [sms] = stack.sms.messages(to=to)
        assert "KES 300" in sms.message and "A101" in sms.message, sms.message
    assert paid["amount"] == 300
