"""AfricasTalkingSms against the Africa's Talking sandbox over real HTTP, with the real SDK."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Iterator

import pytest

from core.shared.errors import UpstreamError
from core.shared.phone import mask_phone
from gateways.sms import AfricasTalkingSms, SmsError, _parse
from sandbox.sms import SmsSandbox, create_sms_sandbox
from tests.servers import ServerThread, reserve_port, serve

USERNAME = "lipameter"
API_KEY = "atsk_test_key_0123456789"
PHONE = "254712345678"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    app = create_sms_sandbox(username=USERNAME, api_key=API_KEY, sender_ids={"LIPAMETER"})
    with serve(app) as srv:
        yield srv


@pytest.fixture
def sandbox(server: ServerThread) -> SmsSandbox:
    state: SmsSandbox = server.server.config.app.state.sms
    state.reset()
    return state


def gateway(server: ServerThread, **kwargs) -> AfricasTalkingSms:
    options = {"api_key": API_KEY, "api_base": server.url, "backoff_base_s": 0.01, "timeout_s": 2.0}
    options.update(kwargs)
    return AfricasTalkingSms(USERNAME, options.pop("api_key"), **options)


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers.get("content-type", ""), resp.read().decode()


async def test_message_is_delivered_and_visible_in_the_inbox(server, sandbox):
    text = "Meter A12: KES 500 received, receipt SGR7XK1. Balance KES 812.40"
    result = await gateway(server).send(PHONE, text)

    assert result.status == "Success"
    assert result.message_id.startswith("ATXid_")
    assert result.cost == "KES 0.8000"
    [msg] = sandbox.messages(to=PHONE)
    assert msg.to == "+254712345678"
    assert msg.messageId == result.message_id
    status, ctype, body = get(f"{server.url}/sandbox/sms?to={PHONE}")
    assert status == 200 and ctype == "application/json"
    [wire] = json.loads(body)
    assert wire["to"] == "+254712345678" and "SGR7XK1" in wire["message"] and wire["from"] is None
    assert get(f"{server.url}/sandbox/sms?to=254700000000")[2] == "[]"


async def test_sender_id_is_sent_and_unknown_sender_is_refused(server, sandbox):
    await gateway(server, sender_id="LIPAMETER").send(PHONE, "hello")
    assert sandbox.messages()[0].sender == "LIPAMETER"

    with pytest.raises(SmsError) as err:
        await gateway(server, sender_id="SOMEONE").send(PHONE, "hello")
    assert err.value.code == "sms_invalid_sender_id" and not err.value.transient


async def test_wrong_api_key_is_a_permanent_error_without_retries(server, sandbox):
    with pytest.raises(SmsError) as err:
        await gateway(server, api_key="wrong-key").send(PHONE, "hello")

    assert isinstance(err.value, UpstreamError)
    assert err.value.code == "sms_auth" and err.value.transient is False
    assert sandbox.requests == 1
    assert sandbox.messages() == []


async def test_recipient_status_500_is_retried_then_delivered_once(server, sandbox):
    sandbox.fail_next(2, status_code=500)

    result = await gateway(server).send(PHONE, "receipt")

    assert result.status == "Success"
    assert sandbox.requests == 3
    assert len(sandbox.messages()) == 1
    assert [r.statusCode for r in sandbox.rejected()] == [500, 500]


async def test_http_500_is_retried(server, sandbox):
    sandbox.fail_next(1, status_code=500, http=True)

    await gateway(server).send(PHONE, "receipt")

    assert sandbox.requests == 2 and len(sandbox.messages()) == 1


async def test_gateway_error_beyond_the_retry_budget_is_transient(server, sandbox):
    sandbox.fail_next(5, status_code=501)

    with pytest.raises(SmsError) as err:
        await gateway(server, max_retries=2).send(PHONE, "receipt")

    assert err.value.code == "sms_gateway_error" and err.value.transient is True
    assert err.value.status_code == 501
    assert sandbox.requests == 3 and sandbox.messages() == []


async def test_insufficient_balance_is_transient_but_not_retried_at_once(server, sandbox):
    sandbox.fail_next(1, status_code=405)

    with pytest.raises(SmsError) as err:
        await gateway(server).send(PHONE, "receipt")

    assert err.value.code == "sms_insufficient_balance" and err.value.transient is True
    assert sandbox.requests == 1


async def test_blacklisted_number_is_permanent(server, sandbox):
    sandbox.block("+254712345678")

    with pytest.raises(SmsError) as err:
        await gateway(server).send(PHONE, "receipt")

    assert err.value.code == "sms_user_in_blacklist" and err.value.transient is False
    assert err.value.status_code == 406
    assert sandbox.requests == 1 and sandbox.messages() == []


async def test_invalid_number_is_permanent(server, sandbox):
    # Well-formed E.164, so it passes our check and the SDK's; +254 0… is no Kenyan mobile.
    with pytest.raises(SmsError) as err:
        await gateway(server).send("254012345678", "receipt")

    assert err.value.code == "sms_invalid_phone_number" and err.value.transient is False
    assert err.value.status_code == 403
    assert sandbox.rejected()[0].status == "InvalidPhoneNumber"


async def test_malformed_number_is_refused_before_any_request(server, sandbox):
    with pytest.raises(SmsError) as err:
        await gateway(server).send("07123", "receipt")

    assert err.value.transient is False and sandbox.requests == 0


async def test_unreachable_service_is_transient(server, sandbox):
    dead = f"http://127.0.0.1:{reserve_port()}"

    with pytest.raises(SmsError) as err:
        await gateway(server, api_base=dead, max_retries=1).send(PHONE, "receipt")

    assert err.value.code == "sms_network" and err.value.transient is True


async def test_slow_answer_times_out_and_the_retry_delivers(server, sandbox):
    sandbox.delay_next(1, 0.6)

    result = await gateway(server, timeout_s=0.3).send(PHONE, "receipt")

    assert result.status == "Success" and sandbox.requests == 2
    # At-least-once: the service still completes the slow first request, so two copies arrive.
    deadline = time.monotonic() + 3
    while len(sandbox.messages()) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(sandbox.messages(to=PHONE)) == 2


def test_a_json_answer_sent_as_text_is_still_read():
    # The SDK returns raw text unless Content-Type is exactly application/json (no charset).
    text = json.dumps({"SMSMessageData": {"Message": "Sent to 1/1 Total Cost: KES 0.8000", "Recipients": [
        {"statusCode": 101, "number": "+254712345678", "status": "Success", "cost": "KES 0.8000",
         "messageId": "ATXid_1"}]}})
    assert _parse(text, "+254712345678").message_id == "ATXid_1"


async def test_logs_mask_the_phone_and_never_show_the_key(server, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    sandbox.fail_next(1, status_code=500)

    await gateway(server).send(PHONE, "receipt")
    with pytest.raises(SmsError):
        await gateway(server, api_key="wrong-key").send(PHONE, "receipt")

    assert mask_phone(PHONE) in caplog.text
    assert PHONE not in caplog.text and API_KEY not in caplog.text
    assert API_KEY not in repr(gateway(server))


async def test_html_inbox_renders(server, sandbox):
    await gateway(server).send(PHONE, "Balance <KES 812.40> & more")
    sandbox.block("254799999999")
    with pytest.raises(SmsError):
        await gateway(server).send("254799999999", "blocked one")

    status, ctype, page = get(f"{server.url}/sandbox/sms/inbox")

    assert status == 200 and ctype.startswith("text/html")
    assert 'http-equiv="refresh" content="3"' in page
    assert "+254712345678" in page and "Balance &lt;KES 812.40&gt; &amp; more" in page
    assert "UserInBlacklist" in page


async def test_delete_clears_the_inbox(server, sandbox):
    await gateway(server).send(PHONE, "one")
    req = urllib.request.Request(f"{server.url}/sandbox/sms", method="DELETE")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 204
    assert sandbox.messages() == []
