"""How the Daraja gateway reads Daraja's answers: what is retried, what is refused, and the words
a tenant reads for each refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

IN_PROCESS = "500.001.1001"

DUPLICATE_MESSAGE = "You already have an M-Pesa prompt waiting; complete or cancel it first."
BUSY_MESSAGE = "M-Pesa is busy or unreachable right now; please try again in a few minutes."
UNCONFIRMED_MESSAGE = (
    "M-Pesa did not confirm the payment prompt in time; if a prompt reaches your phone you can still complete it."
)
_SETUP = "the payment service is not set up correctly."
# Substrings of Daraja's errorMessage (lower case) -> the reason a tenant reads.
_REASONS: tuple[tuple[str, str], ...] = (
    ("invalid amount", "invalid amount."),
    ("invalid phonenumber", "invalid phone number."),
    ("invalid partya", "invalid phone number."),
    ("invalid accountreference", "invalid meter number."),
    ("invalid checkoutrequestid", "unknown payment request."),
    ("invalid timestamp", "the server clock is wrong."),
    ("invalid businessshortcode", _SETUP),
    ("invalid partyb", _SETUP),
    ("invalid shortcode", _SETUP),
    ("invalid transactiontype", _SETUP),
    ("invalid callbackurl", _SETUP),
    ("wrong credentials", _SETUP),
    ("invalid authentication", _SETUP),
    ("invalid grant type", _SETUP),
    ("invalid access token", _SETUP),
    ("merchant does not exist", _SETUP),
)

class Retryable(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code, self.message = code, message


class Refused(Retryable):
    """Not worth retrying: Daraja looked at the request and said no."""


class ConfigurationError(Refused):
    """Daraja refuses our setup (consumer key, shortcode, passkey, merchant): every payment will fail
    until a person fixes the settings, so it is logged as such and kept for `doctor`."""


@dataclass(frozen=True)
class ConfigurationProblem:
    code: str
    message: str  # Daraja's errorMessage, never a secret


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def code(self) -> str:
        fault = self.body.get("fault") or {}  # Apigee's own shape, e.g. for spike arrest
        detail = fault.get("detail") or {} if isinstance(fault, dict) else {}
        return str(self.body.get("errorCode") or detail.get("errorcode") or f"http_{self.status}")

    @property
    def message(self) -> str:
        fault = self.body.get("fault")
        faultstring = fault.get("faultstring") if isinstance(fault, dict) else None
        return str(self.body.get("errorMessage") or faultstring or "")

    @property
    def processing(self) -> bool:
        # Daraja answers a query for an unfinished prompt with HTTP 500 and this errorCode.
        return self.code == IN_PROCESS and "being processed" in self.message.lower()


def parse_answer(response: httpx.Response) -> Answer:
    try:
        body = response.json()
    except ValueError:
        body = {}
    return Answer(response.status_code, body if isinstance(body, dict) else {})


def check_answer(answer: Answer) -> None:
    if (answer.status < 300 and "errorCode" not in answer.body) or answer.processing:
        return
    text = answer.message.lower()
    if answer.status == 429 or answer.code in ("500.003.02", "500.003.03") or "spike arrest" in text:
        raise Retryable(answer.code, answer.message)
    # Daraja reuses 500.001.1001 for refusals that no retry can fix: a prompt already open on the
    # phone, or (any other errorMessage, e.g. "Wrong credentials", "Merchant does not exist") our setup.
    if answer.code == IN_PROCESS:
        if any(k in text for k in ("lock subscriber", "in process")):
            raise Refused(answer.code, answer.message)
        raise ConfigurationError(answer.code, answer.message)
    if answer.status >= 500:
        raise Retryable(answer.code, answer.message)
    raise Refused(answer.code, answer.message)


def refusal_message(op: str, code: str, daraja_message: str) -> str:
    text = daraja_message.lower()
    if "lock subscriber" in text or "already in process" in text:
        return DUPLICATE_MESSAGE
    reason = next((r for key, r in _REASONS if key in text), None)
    if reason is None:
        reason = _SETUP if code.startswith(("400.008", "404.001", "401", IN_PROCESS)) else "the request was refused."
    prefix = "M-Pesa could not send the payment prompt" if op == "push" else "M-Pesa could not check the payment"
    return f"{prefix}: {reason}"
