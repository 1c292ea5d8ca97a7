"""Daraja's wire rules for the sandbox: field validation, error bodies, ids, records and callback shapes.

No state here, so the rules can be read against Safaricom's documentation in one place.
"""

from __future__ import annotations

import base64
import hmac
import random
import re
import string
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

NAIROBI = ZoneInfo("Africa/Nairobi")
TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
TIMESTAMP_SKEW = timedelta(minutes=10)
MAX_AMOUNT = 250_000
_PHONE = re.compile(r"^254[71]\d{8}$")
_SHORTCODE = re.compile(r"^\d{5,7}$")
_URL = re.compile(r"^https?://[^\s/?#]+(?:[/?#]\S*)?$")

# (ResultCode, ResultDesc) as Safaricom sends them in callbacks and STK query answers.
RESULTS: dict[str, tuple[int, str]] = {
    "success": (0, "The service request is processed successfully."),
    "cancelled": (1032, "Request cancelled by user"),
    "unreachable": (1037, "DS timeout user cannot be reached"),
    "wrong_pin": (2001, "The initiator information is invalid."),
    "insufficient_funds": (1, "The balance is insufficient for the transaction."),
    "lost_callback": (0, "The service request is processed successfully."),
    "duplicate_callback": (0, "The service request is processed successfully."),
    # The prompt times out (1037, the callback and the STK query say so), then the tenant's payment goes
    # through after all and a success callback follows: the money moved after the failure.
    "late_success": (1037, "DS timeout user cannot be reached"),
}
SUCCESS_RESULT = RESULTS["success"]
# Apigee's own answer when a caller exceeds the spike-arrest rate (HTTP 429, not Daraja's error shape).
SPIKE_ARREST_CODE = "policies.ratelimit.SpikeArrestViolation"
SPIKE_ARREST_MESSAGE = ("Spike arrest violation. Allowed rate : MessageRate{messagesPerPeriod=5, "
                        "periodInMicroseconds=1000000, maxBurstMessageCount=5.0}")
PUSH_ERROR = "push_error"
OUTCOMES = frozenset(RESULTS) | {PUSH_ERROR}


class DarajaError(Exception):
    """An error answer: HTTP status plus Daraja's `{requestId, errorCode, errorMessage}` body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        if self.code == SPIKE_ARREST_CODE:
            return {"fault": {"faultstring": self.message, "detail": {"errorcode": self.code}}}
        return error_body(self.code, self.message)


def error_body(code: str, message: str, request_id: str | None = None) -> dict[str, str]:
    rid = request_id if request_id is not None else new_request_id()
    return {"requestId": rid, "errorCode": code, "errorMessage": message}


def bad_request(name: str) -> DarajaError:
    return DarajaError(400, "400.002.02", f"Bad Request - Invalid {name}")


def new_request_id() -> str:
    return f"{random.randint(1000, 99999)}-{random.randint(10**7, 10**8 - 1)}-1"


def new_merchant_request_id() -> str:
    return f"{random.randint(10000, 99999)}-{random.randint(10**7, 10**8 - 1)}-1"


def new_checkout_request_id(now: datetime, phone: str) -> str:
    # Real ids are ws_CO_ + DDMMYYYYHHMMSS + milliseconds + the last 9 digits of the phone.
    local = now.astimezone(NAIROBI)
    return f"ws_CO_{local:%d%m%Y%H%M%S}{local.microsecond // 1000:03d}{phone[-9:]}"


def new_receipt() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return random.choice(string.ascii_uppercase) + "".join(random.choices(alphabet, k=9))


def password_for(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def check_credentials(body: dict[str, Any], shortcode: str, passkey: str, now: datetime) -> None:
    """BusinessShortCode, Timestamp and Password, shared by the push and the query."""
    if str(body.get("BusinessShortCode", "")) != shortcode:
        raise bad_request("BusinessShortCode")
    timestamp = str(body.get("Timestamp", ""))
    if not _timestamp_ok(timestamp, now):
        raise bad_request("Timestamp")
    expected = password_for(shortcode, passkey, timestamp)
    if not hmac.compare_digest(str(body.get("Password", "")).encode(), expected.encode()):
        # Daraja's answer to a Password that does not match shortcode+passkey+timestamp.
        raise DarajaError(500, "500.001.1001", "Wrong credentials")


def _timestamp_ok(timestamp: str, now: datetime) -> bool:
    if not re.fullmatch(r"\d{14}", timestamp):
        return False
    try:
        sent = datetime.strptime(timestamp, "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
    except ValueError:
        return False
    return abs(sent - now) <= TIMESTAMP_SKEW


def parse_amount(value: Any) -> int | None:
    """Daraja takes 1, "1" or 1.0 but not 1.5: a whole number of shillings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and 1 <= value <= MAX_AMOUNT:
        return value
    return None


def validate_push(body: dict[str, Any]) -> tuple[str, int]:
    """Field checks after the credentials; returns (phone, amount)."""
    if body.get("TransactionType") not in TRANSACTION_TYPES:
        raise bad_request("TransactionType")
    amount = parse_amount(body.get("Amount"))
    if amount is None:
        raise bad_request("Amount")
    if not _PHONE.match(str(body.get("PartyA", ""))):
        raise bad_request("PartyA")
    if not _SHORTCODE.match(str(body.get("PartyB", ""))):
        raise bad_request("PartyB")
    phone = str(body.get("PhoneNumber", ""))  # the handset that gets the prompt
    if not _PHONE.match(phone):
        raise bad_request("PhoneNumber")
    if not isinstance(body.get("CallBackURL"), str) or not _URL.match(body["CallBackURL"]):
        raise bad_request("CallBackURL")
    if not _text_ok(body.get("AccountReference"), 12):
        raise bad_request("AccountReference")
    if not _text_ok(body.get("TransactionDesc"), 13):
        raise bad_request("TransactionDesc")
    return phone, amount


def _text_ok(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= limit


@dataclass
class Script:
    """How a scripted STK push ends. `paid_amount` makes the callback's Amount differ from the request."""

    outcome: str = "success"
    paid_amount: int | float | None = None
    balance_item: bool = False  # add the value-less {"Name": "Balance"} item
    amount_style: str = "float"  # "float" sends 500.0 like Safaricom, "int" sends 500
    delay_s: float | None = None  # overrides callback_delay_s for this push
    balance_value: str | None = None  # a Balance item whose Value is a string, as some callbacks carry
    masked_phone: bool = False  # PhoneNumber as Safaricom now sends it: "254708***149", a string
    late_after_s: float = 1.0  # late_success: seconds between the failure and the success callback
    callback_retries: int | None = None  # overrides the sandbox's retries after a non-200 answer


@dataclass
class Fault:
    """An error answer given instead of processing the request."""

    status: int = 500
    error_code: str = "500.003.1001"
    message: str = "Internal Server Error"


@dataclass
class Transaction:
    merchant_request_id: str
    checkout_request_id: str
    phone: str
    amount: int
    account_reference: str
    description: str
    callback_url: str
    transaction_type: str
    party_b: str
    script: Script
    created_at: datetime
    state: str = "pending"  # pending -> settled
    result_code: int | None = None
    result_desc: str | None = None
    receipt: str | None = None
    settled_at: datetime | None = None
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # what was POSTed and the answer

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created_at", "settled_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def callback_body(txn: Transaction, settled_at: datetime, result: tuple[int, str] | None = None) -> dict[str, Any]:
    """The stkCallback exactly as Safaricom's samples show it; metadata only on success. `result`
    overrides the transaction's own (the late success after a failure)."""
    code, desc = result or (txn.result_code, txn.result_desc)
    callback: dict[str, Any] = {
        "MerchantRequestID": txn.merchant_request_id,
        "CheckoutRequestID": txn.checkout_request_id,
        "ResultCode": code,
        "ResultDesc": desc,
    }
    if code == 0:
        callback["CallbackMetadata"] = {"Item": _metadata_items(txn, settled_at)}
    return {"Body": {"stkCallback": callback}}


def _metadata_items(txn: Transaction, settled_at: datetime) -> list[dict[str, Any]]:
    paid = txn.script.paid_amount if txn.script.paid_amount is not None else txn.amount
    amount: int | float = int(paid) if txn.script.amount_style == "int" else float(paid)
    items: list[dict[str, Any]] = [
        {"Name": "Amount", "Value": amount},
        {"Name": "MpesaReceiptNumber", "Value": txn.receipt},
    ]
    if txn.script.balance_item:
        # Older callbacks carry a Balance item with no Value at all, third in the list.
        items.append({"Name": "Balance"})
    elif txn.script.balance_value is not None:
        items.append({"Name": "Balance", "Value": txn.script.balance_value})
    items.append({"Name": "TransactionDate", "Value": int(f"{settled_at.astimezone(NAIROBI):%Y%m%d%H%M%S}")})
    phone: int | str = f"{txn.phone[:6]}***{txn.phone[-3:]}" if txn.script.masked_phone else int(txn.phone)
    items.append({"Name": "PhoneNumber", "Value": phone})
    return items
