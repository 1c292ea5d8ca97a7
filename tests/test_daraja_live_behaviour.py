"""Issue 10, "Behaviour the real services have" for Daraja: the callback path, the start-up warnings,
and idle pooled connections that never outlive the server's keep-alive."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from gateways.daraja import KEEPALIVE_EXPIRY_S, DarajaGateway, environment_warnings
from sandbox.daraja import create_daraja_sandbox
from tests import samples
from tests.servers import ServerThread
from tests.stack import CALLBACK_TOKEN, Stack
from tests.test_daraja_gateway import request
from tests.test_daraja_sandbox import KEY, PASSKEY, SECRET, SHORTCODE
from web.settings import Settings


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url)
    yield stack
    stack.stop()


def test_push_uses_the_new_callback_path_and_both_paths_work(stack):
    answer = stack.pay(amount=500)
    assert answer.status_code == 200, answer.text
    [txn] = stack.daraja.transactions
    assert txn.callback_url == f"{stack.url}/payments/callback/{CALLBACK_TOKEN}"
    assert "mpesa" not in txn.callback_url.lower() and "safaricom" not in txn.callback_url.lower()
    done = stack.wait_for(answer.json()["paymentId"], lambda p: p["status"] == "COMPLETED")
    assert done["mpesaReceiptNumber"]
    old = httpx.post(stack.callback_url, content=samples.with_ids(samples.CANCELLED, checkout="ws_CO_none"))
    assert stack.callback_url.endswith(f"/mpesa/callback/{CALLBACK_TOKEN}") and old.status_code == 200
    wrong = httpx.post(f"{stack.url}/payments/callback/not-the-token", content=b"{}")
    assert wrong.status_code == 404


def test_hostile_callbacks_never_answer_5xx(stack):
    stack.daraja.script_next("lost_callback")  # only the bodies below reach us (cancelling after the push
    answer = stack.pay(amount=500, phone="0799000001")  # raced the sandbox's own callback on a slow machine)
    cid = answer.json()["checkoutRequestId"]
    url = f"{stack.url}/payments/callback/{CALLBACK_TOKEN}"
    success = json.loads(samples.with_ids(samples.SUCCESS, checkout=cid, amount=500))
    items = success["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    bodies = [
        samples.with_ids(samples.SUCCESS, checkout=cid + "9" * 80, amount=500),
        json.dumps(success).replace(items[1]["Value"], "R" * 300).encode(),
        json.dumps(success).replace('"Value": 500', '"Value": 123456789012345678901234567890').encode(),
        json.dumps(success).replace(items[1]["Value"], "\\ud800").encode(),
        json.dumps(success).replace("The service request", "The \\u0000 service").encode(),
        samples.with_ids(samples.CANCELLED, checkout=cid) + b"\x00",
        samples.with_ids(samples.CANCELLED, checkout="ws_CO_\\ud800"),
    ]
    statuses = [httpx.post(url, content=body).status_code for body in bodies]
    assert all(status < 500 for status in statuses), statuses
    assert stack.sql("SELECT count(*) n FROM mpesa_callbacks")[0].n == len(bodies)
    assert stack.sql("SELECT count(*) n FROM mpesa_callbacks WHERE outcome = 'received'")[0].n == 0
    payment = stack.payment(answer.json()["paymentId"])
    assert payment["status"] == "NEEDS_REVIEW" and payment["topUpStatus"] is None


@pytest.mark.parametrize("base,shortcode,passkey,expected", [
    ("https://sandbox.safaricom.co.ke", "174379", "anything", None),
    ("https://sandbox.safaricom.co.ke", "4123456", "live-passkey", "live credentials only work against"),
    ("https://api.safaricom.co.ke", "174379", "live-passkey", "sandbox's test one"),
    ("https://api.safaricom.co.ke", "4123456", "live-passkey", None),
    ("http://127.0.0.1:9000", "4123456", "x", None),
])
def test_environment_mismatch_is_named(base, shortcode, passkey, expected):
    warnings = environment_warnings(base, shortcode, passkey)
    assert (expected is None and warnings == []) or (expected and expected in warnings[0])


def test_sandbox_passkey_at_production_is_named():
    passkey = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"  # Safaricom's published test passkey
    assert environment_warnings("https://api.safaricom.co.ke", "4123456", passkey)


def test_serve_warns_about_plain_http_public_url():
    plain = Settings(_env_file=None, public_base_url="http://pay.example.com", daraja_shortcode="174379")
    assert any("not https://" in warning for warning in plain.startup_warnings())
    secure = Settings(_env_file=None, public_base_url="https://pay.example.com", daraja_shortcode="174379")
    assert secure.startup_warnings() == []
    assert secure.callback_url.startswith("https://pay.example.com/payments/callback/")


class ClientPorts:
    """ASGI wrapper recording the client port of each request: a new port is a new connection."""

    def __init__(self, app) -> None:
        self.app, self.ports = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.ports.append(scope["client"][1])
        await self.app(scope, receive, send)


def test_keepalive_expiry_is_shorter_than_common_server_keepalives():
    assert KEEPALIVE_EXPIRY_S < 5  # uvicorn's and nginx's defaults are 5 s and more


async def test_idle_connection_is_dropped_before_the_server_closes_it():
    """The server keeps idle connections 1 s; ours expire after 0.3 s, so a push after 0.6 s idle goes
    out on a fresh connection, never on one the server is closing (ReadError: outcome unknown)."""
    app = create_daraja_sandbox(consumer_key=KEY, consumer_secret=SECRET, shortcode=SHORTCODE, passkey=PASSKEY,
                                callback_delay_s=30)
    recorder = ClientPorts(app)
    server = ServerThread(recorder, timeout_keep_alive=1).start()
    gateway = DarajaGateway(base_url=server.url, consumer_key=KEY, consumer_secret=SECRET, shortcode=SHORTCODE,
                            passkey=PASSKEY, callback_url="https://example.com/payments/callback/t",
                            timeout_s=2, max_retries=0, keepalive_expiry_s=0.3)
    try:
        await gateway.stk_push(request(phone="254708000001"))  # token + push: one pooled connection
        assert len(set(recorder.ports)) == 1
        await asyncio.sleep(0.6)
        await gateway.stk_push(request(phone="254708000002"))
        assert recorder.ports[-1] != recorder.ports[0], "an idle connection outlived our expiry"
    finally:
        await gateway.aclose()
        app.state.daraja.reset()
        server.stop()
