"""`lipameter dial` against the running app, as an operator or a developer uses it."""

from __future__ import annotations

import io
import os

import pytest

from tests.cli_helpers import lipameter
from tests.stack import Stack
from tests.ussd_helpers import seed_ussd
from web.cli.common import CliError
from web.cli.dial import dial, gateway_phone, ussd_url


@pytest.fixture
def stack(database_url):
    stack = Stack(database_url)
    seed_ussd(database_url)
    yield stack
    stack.stop()


def test_dial_command_and_function(stack):
    result = lipameter("dial", "--url", stack.url, "--phone", "0722000111", env=dict(os.environ),
                       stdin="1\n1\n100\n2\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Dialling *384*1# as +254722000111" in out
    assert "Nunua umeme" in out and "Thibitisha malipo:" in out and "> 100" in out
    assert out.rstrip().endswith("Imeghairiwa. Hakuna pesa iliyotozwa.")
    assert out.count("[CON,") == 4 and out.count("[END,") == 1
    # In process: the form fields as Africa's Talking posts them (cumulative text, one sessionId).
    replies, out = iter(["1", "98", "0", "00"]), io.StringIO()
    with pytest.raises(StopIteration):
        dial(stack.url, "0745000222", read=lambda prompt: next(replies), out=out)
    texts = [row.last_text for row in stack.sql("SELECT last_text FROM ussd_sessions WHERE phone = '254745000222'")]
    assert texts == ["1*98*0*00"] and "M06" in out.getvalue()
    # End of input hangs up; a dead server or a non-USSD URL is one clear error.
    out = io.StringIO()
    assert dial(stack.url + "/ussd", "+254712345678", read=_eof, out=out) == 1 and "(hung up)" in out.getvalue()
    with pytest.raises(CliError, match="cannot reach"):
        dial("http://127.0.0.1:9", "0712345678", read=_eof, out=io.StringIO())
    with pytest.raises(CliError, match="not a USSD screen"):
        dial(stack.url + "/healthz", "0712345678", read=_eof, out=io.StringIO())


def _eof(prompt: str) -> str:
    raise EOFError


def test_url_and_phone_forms():
    assert ussd_url("http://h:1/") == ussd_url("http://h:1/ussd") == "http://h:1/ussd"
    assert gateway_phone("0712 345 678") == "+254712345678" and gateway_phone("12345") == "12345"
