"""Security review of the entry points: bugs that are real today (these tests fail until fixed).

1. A NUL character in any input that reaches PostgreSQL crashes the request with a 500 (or a reset
   connection): the JSON API, the dashboard login (before authentication), dashboard ids and filters,
   and Africa's Talking's end-of-session report.
2. The login throttle (5 failures per username per 15 min) is checked before the password and recorded
   after it, so concurrent guesses all pass the check: an attacker gets as many guesses as they send at once.
3. `lipameter serve` runs uvicorn with its access log on, which prints every request line, and Daraja's
   callback URL carries CALLBACK_TOKEN in its path: the callback secret lands in the logs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.admin_helpers import Browser, add_user, logged_in, module_database, start_stack
from tests.servers import reserve_port


@pytest.fixture(scope="module", params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(request, tmp_path_factory, sqlite_template):
    stack = start_stack(module_database(request, tmp_path_factory, sqlite_template))
    yield stack
    stack.stop()


def _status(call) -> int:
    try:
        return call().status_code
    except httpx.TransportError:  # the server dropped the connection: as bad as a 500
        return 599


# --- 1. NUL bytes -----------------------------------------------------------------------------------

def test_json_api_refuses_nul_with_4xx_not_5xx(stack):
    assert _status(lambda: stack.pay(description="Electricity\u0000")) < 500
    assert _status(lambda: stack.pay(meter="A1\u000001")) < 500
    assert _status(lambda: stack.client.get("/mpesa/payments/abc%00def")) < 500


def test_dashboard_login_refuses_nul_with_4xx_not_5xx(stack):
    with Browser(stack) as anonymous:  # no account needed
        anonymous.page("/admin/login")
        assert _status(lambda: anonymous.form("/admin/login", username="boss\x00", password="x")) < 500


def test_dashboard_pages_refuse_nul_with_4xx_not_5xx(stack):
    viewer = logged_in(stack, "watcher")
    try:
        paths = ("/admin/payments/ab%00", "/admin/meters/A%00", "/admin/tenants/x%00", "/admin/topups/x%00",
                 "/admin/payments?meter=A%00", "/admin/audit?actor=a%00")
        crashed = [path for path in paths if _status(lambda path=path: viewer.get(path)) >= 500]
        assert not crashed, crashed
    finally:
        viewer.close()


def test_ussd_end_of_session_report_refuses_nul_with_4xx_not_5xx(stack):
    assert _status(lambda: httpx.post(f"{stack.url}/ussd/events",
                                      content=b"sessionId=ATUid_1%00&status=Success&phoneNumber=%2B254712345678")) < 500


# --- 2. login throttle under concurrency -------------------------------------------------------------

def test_concurrent_wrong_passwords_get_no_more_guesses_than_the_throttle_allows(stack):
    add_user(stack.database_url, "target", "admin", password="target-password-123")
    clients = []
    for _ in range(24):
        client = Browser(stack)
        client.page("/admin/login")
        clients.append(client)

    def guess(pair):
        index, client = pair
        return client.form("/admin/login", username="target", password=f"wrong-guess-{index}").status_code

    with ThreadPoolExecutor(len(clients)) as pool:
        answers = list(pool.map(guess, enumerate(clients)))
    for client in clients:
        client.close()
    checked = answers.count(401)  # the password was actually tried
    assert checked <= 5, f"{checked} passwords were tried in one burst (limit 5): {answers}"


# --- 3. CALLBACK_TOKEN in the access log ------------------------------------------------------------

def test_serve_does_not_log_the_callback_token(tmp_path, sqlite_template):
    import shutil

    shutil.copy(sqlite_template, tmp_path / "serve.db")
    token = "callback-secret-" + "9" * 20
    port = reserve_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DARAJA_", "API_KEYS", "CALLBACK_", "PUBLIC_", "AT_", "TUYA_", "TELEGRAM_"))}
    env.update(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/serve.db", PUBLIC_BASE_URL="https://pay.example",
               API_KEYS="k" * 20, CALLBACK_TOKEN=token, DARAJA_CONSUMER_KEY="ck", DARAJA_CONSUMER_SECRET="cs",
               DARAJA_SHORTCODE="174379", DARAJA_PASSKEY="pk", TUYA_ENDPOINT="http://127.0.0.1:9",
               TUYA_ACCESS_ID="id", TUYA_ACCESS_SECRET="secret", LOG_LEVEL="INFO")
    server = subprocess.Popen([sys.executable, "-m", "web.cli", "serve", "--port", str(port), "--no-worker"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
                time.sleep(0.1)
        httpx.post(f"http://127.0.0.1:{port}/mpesa/callback/{token}", content=b"{}", timeout=5)
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=20)
    assert token not in output, [line for line in output.splitlines() if token in line]


# --- 4. full phone numbers in error logs ------------------------------------------------------------

async def test_database_errors_do_not_carry_bound_parameters(database_url):
    """SQLAlchemy writes every bound parameter into its exception text, and tracebacks reach the log:
    the engines hide them, so a failed query never logs a caller's full number."""
    import sqlalchemy as sa

    from storage.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(sa.exc.DBAPIError) as error:
                await conn.execute(sa.text("SELECT :phone AS p FROM no_such_table"), {"phone": "254712345678"})
    finally:
        await engine.dispose()
    assert "254712345678" not in str(error.value) and "hidden" in str(error.value)




async def test_the_nul_guard_refuses_a_nul_in_path_or_query_in_every_form_and_passes_the_rest():
    """web/http.py:RefuseNul, on the ASGI scope as uvicorn gives it (the path percent-decoded, the query not)."""
    from web.http import RefuseNul

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def status(path: str, query: bytes) -> int:
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": []}
        await RefuseNul(app)(scope, None, send)
        return sent[0]["status"]

    for path, query in (("/a\x00b", b""), ("/ussd", b"x=%00"), ("/ussd", b"x=\x00"), ("/ussd", b"x=\\u0000"),
                        ("/a%00", b"")):
        assert await status(path, query) == 400, (path, query)
    for path, query in (("/ussd", b""), ("/admin/payments", b"meter=A%2001&page=2"), ("/a%41", b"x=%0A")):
        assert await status(path, query) == 204, (path, query)
