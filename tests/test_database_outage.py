"""The database away (a restart, a failover): every entry point answers 503 with a retry hint, or a polite
USSD END, never a 500; nothing is acknowledged that was not stored."""

from __future__ import annotations

import httpx
import pytest

from tests.servers import ServerThread
from tests.stack import API_KEY, CALLBACK_TOKEN, DARAJA
from web.app import create_app
from web.bootstrap import build_container
from web.settings import Settings

NOWHERE = "postgresql+asyncpg://postgres@127.0.0.1:1/lipameter"  # nothing listens on port 1


@pytest.fixture(scope="module")
def app_without_database():
    settings = Settings(_env_file=None, database_url=NOWHERE, public_base_url="http://127.0.0.1",
                        api_keys=API_KEY, callback_token=CALLBACK_TOKEN, daraja_base_url="http://127.0.0.1:1",
                        daraja_consumer_key=DARAJA["consumer_key"], daraja_consumer_secret=DARAJA["consumer_secret"],
                        daraja_shortcode=DARAJA["shortcode"], daraja_passkey=DARAJA["passkey"])
    server = ServerThread(create_app(build_container(settings), run_worker=False)).start()
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    yield client
    client.close()
    server.stop()


def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["retry-after"]) > 0
    assert answer.json()["code"] == "unavailable"


def test_a_payment_request_is_refused_with_a_retry_hint(app_without_database):
    body = {"amount": 100, "phoneNumber": "0712345678", "meterId": "A101"}
    assert_unavailable(app_without_database.post("/mpesa/payments", json=body))
    assert_unavailable(app_without_database.get("/mpesa/payments/some-id"))


def test_a_callback_is_refused_so_it_is_never_acknowledged_unstored(app_without_database):
    body = {"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "ResultCode": 0, "ResultDesc": "ok"}}}
    assert_unavailable(app_without_database.post(f"/payments/callback/{CALLBACK_TOKEN}", json=body))


def test_a_ussd_caller_is_told_politely(app_without_database):
    answer = app_without_database.post("/ussd", data={"sessionId": "s1", "phoneNumber": "+254712345678",
                                                      "serviceCode": "*384*1#", "text": ""})
    assert answer.status_code == 200 and answer.text.startswith("END Sorry") and "Samahani" in answer.text


def test_readiness_says_so(app_without_database):
    assert app_without_database.get("/readyz").status_code == 503


def test_a_server_starting_up_is_away_not_a_bug():
    """Right after a restart PostgreSQL refuses with 57P03, which reaches us as a plain DBAPIError (no
    disconnect flag): seen as a 500 on a callback in the chaos storm. A query's own error stays a 500."""
    import asyncpg
    from sqlalchemy import exc

    from web.outage import is_database_away

    adapted = RuntimeError("the database system is starting up")  # SQLAlchemy's adapter error, asyncpg's as cause
    adapted.__cause__ = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    assert is_database_away(exc.DBAPIError("SELECT 1", {}, adapted))
    bug = RuntimeError("column does not exist")
    bug.__cause__ = asyncpg.exceptions.UndefinedColumnError("column x does not exist")
    assert not is_database_away(exc.DBAPIError("SELECT 1", {}, bug))
