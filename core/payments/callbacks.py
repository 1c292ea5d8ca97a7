"""Parse Daraja's STK callback. Items by `Name`, never by position; every field may surprise us:
`ResultCode` may be a string (`"SFC_IC0003"`), `Amount` may be `1` or `1.00`, `Balance` may come
without a `Value`, `PhoneNumber` may be missing or masked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

NAIROBI = ZoneInfo("Africa/Nairobi")


class MalformedCallback(ValueError):
    pass


@dataclass(frozen=True)
class StkCallback:
    merchant_request_id: str | None
    checkout_request_id: str
    result_code: str
    result_desc: str
    amount: Decimal | None = None
    receipt: str | None = None
    transaction_date: datetime | None = None
    phone: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.result_code == "0"


def parse_stk_callback(body: bytes | str) -> StkCallback:
    try:
        document = json.loads(body)
        stk = document["Body"]["stkCallback"]
        checkout_id = stk["CheckoutRequestID"]
        result_code = stk["ResultCode"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise MalformedCallback("not an STK callback: Body.stkCallback with CheckoutRequestID and ResultCode expected") from None
    if not isinstance(checkout_id, str) or not checkout_id:
        raise MalformedCallback("CheckoutRequestID must be a non-empty string")
    items = _items_by_name(stk.get("CallbackMetadata"))
    return StkCallback(
        merchant_request_id=_text(stk.get("MerchantRequestID")),
        checkout_request_id=checkout_id,
        result_code=str(result_code).strip(),
        result_desc=_text(stk.get("ResultDesc")) or "",
        amount=_decimal(items.get("Amount")),
        receipt=_text(items.get("MpesaReceiptNumber")),
        transaction_date=_daraja_datetime(items.get("TransactionDate")),
        phone=_text(items.get("PhoneNumber")),
    )


def _items_by_name(metadata: object) -> dict[str, object]:
    if not isinstance(metadata, dict) or not isinstance(metadata.get("Item"), list):
        return {}
    return {
        item["Name"]: item.get("Value")
        for item in metadata["Item"]
        if isinstance(item, dict) and isinstance(item.get("Name"), str)
    }


def _text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def _decimal(value: object) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        # repr() keeps 1.00 from JSON as the float 1.0 written out, without binary noise.
        amount = Decimal(repr(value) if isinstance(value, float) else str(value))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def _daraja_datetime(value: object) -> datetime | None:
    """Daraja writes 20191219102115 (a number, Nairobi time, YYYYMMDDHHmmss)."""
    text = _text(value)
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
    except ValueError:
        return None
