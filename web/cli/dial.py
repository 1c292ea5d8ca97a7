"""`lipameter dial`: a USSD session from the terminal, posted exactly as Africa's Talking posts it.

Each hop is a form POST with the same random `sessionId`, serviceCode `*384*1#`, the caller's phone in
`+2547…` form, and `text` = every reply so far joined by `*` (empty on the first hop). The screen is
printed, a reply read, until an `END` screen.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from typing import TextIO

import httpx

from core.shared.errors import InvalidInput
from core.shared.phone import normalize_kenyan_mobile
from web.cli.common import fail

SERVICE_CODE = "*384*1#"
NETWORK_CODE = "63902"  # Safaricom
DEFAULT_PHONE = "0712345678"
DEFAULT_URL = "http://127.0.0.1:8000"


def ussd_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/ussd") else url + "/ussd"


def gateway_phone(phone: str) -> str:
    """Africa's Talking sends `+254712345678`; an odd number is passed on as typed, to test the server."""
    try:
        return "+" + normalize_kenyan_mobile(phone)
    except InvalidInput:
        return phone


def dial(url: str, phone: str, *, read: Callable[[str], str] = input, out: TextIO | None = None,
         client: httpx.Client | None = None) -> int:
    """Run one session; returns the number of hops. Raises CliError when the server is not a USSD endpoint."""
    out = sys.stdout if out is None else out  # looked up now, not at import: the caller may have redirected it
    endpoint, session_id, replies = ussd_url(url), f"ATUid_{secrets.token_hex(12)}", []
    form = {"sessionId": session_id, "serviceCode": SERVICE_CODE, "phoneNumber": gateway_phone(phone),
            "networkCode": NETWORK_CODE}
    print(f"Dialling {SERVICE_CODE} as {form['phoneNumber']} -> {endpoint} (session {session_id})", file=out)
    own_client = client is None
    client = client or httpx.Client(timeout=10)
    try:
        while True:
            screen = _hop(client, endpoint, {**form, "text": "*".join(replies)})
            print(f"\n[{screen[:3]}, {len(screen)} chars]\n{screen[4:]}", file=out)
            if screen.startswith("END "):
                return len(replies) + 1
            try:
                replies.append(read("> "))
            except EOFError:
                print("\n(hung up)", file=out)
                return len(replies) + 1
    finally:
        if own_client:
            client.close()


def _hop(client: httpx.Client, endpoint: str, form: dict) -> str:
    try:
        answer = client.post(endpoint, data=form)
    except httpx.HTTPError as error:
        fail(f"cannot reach {endpoint}: {type(error).__name__} (is `lipameter demo` running?)", exit_code=1)
    if answer.status_code != 200 or not answer.text.startswith(("CON ", "END ")):
        fail(f"{endpoint} answered {answer.status_code} {answer.text[:80]!r}, not a USSD screen", exit_code=1)
    return answer.text


def _read_reply(prompt: str) -> str:
    if sys.stdin.isatty():
        return input(prompt)
    line = sys.stdin.readline()  # replies piped in: echo them so the transcript reads like a session
    if not line:
        raise EOFError
    print(prompt + line.rstrip("\n"))
    return line.rstrip("\n")


def cmd_dial(args) -> None:
    dial(args.url, args.phone, read=_read_reply)


def add_parser(sub) -> None:
    parser = sub.add_parser("dial", help="a USSD session from the terminal, as Africa's Talking would post it")
    parser.add_argument("--phone", default=DEFAULT_PHONE, help=f"the caller's phone (default {DEFAULT_PHONE})")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server, or its /ussd URL (default {DEFAULT_URL})")
    parser.set_defaults(func=cmd_dial)
