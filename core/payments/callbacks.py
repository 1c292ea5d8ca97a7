"""Parse Daraja's STK callback. Items by `Name`, never by position; every field may surprise us:
`ResultCode` may be a string (`"SFC_IC0003"`), `Amount` may be `1` or `1.00`, `Balance` may come
without a `Value` or with a string one, `PhoneNumber` may be missing or masked.

Nothing parsed here can break the database: text loses NUL bytes, control characters and lone
surrogates and is cut to its column's length; a CheckoutRequestID that cannot be stored as it is makes
the callback malformed; a receipt or amount that cannot be stored is dropped and named in
`unreadable`, so that a "paid" answer carrying it goes to a person (issue 11 §4).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.shared.clock import NAIROBI
from core.shared.money import read_decimal

# Column sizes in storage/tables.py: what we keep of each field.
CHECKOUT_ID_MAX, MERCHANT_ID_MAX, RESULT_CODE_MAX, RESULT_DESC_MAX, PHONE_MAX = 64, 64, 32, 255, 32
_RECEIPT = re.compile(r"[A-Za-z0-9]{1,32}")
_MAX_AMOUNT = Decimal("1e12")  # Numeric(14, 2)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


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
    unreadable: tuple[str, ...] = ()  # metadata items present but unusable (a person must look)

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
    if (not isinstance(checkout_id, str) or not checkout_id or len(checkout_id) > CHECKOUT_ID_MAX
            or _UNPRINTABLE.search(checkout_id)):
        raise MalformedCallback(f"CheckoutRequestID must be 1..{CHECKOUT_ID_MAX} printable characters")
    items = _items_by_name(stk.get("CallbackMetadata"))
    amount, receipt, unreadable = _amount(items), _receipt(items), []
    if "Amount" in items and amount is None:
        unreadable.append("Amount")
    if "MpesaReceiptNumber" in items and receipt is None:
        unreadable.append("MpesaReceiptNumber")
    return StkCallback(
        merchant_request_id=_text(stk.get("MerchantRequestID"), MERCHANT_ID_MAX),
        checkout_request_id=checkout_id,
        result_code=_text(result_code, RESULT_CODE_MAX) or "",
        result_desc=_text(stk.get("ResultDesc"), RESULT_DESC_MAX) or "",
        amount=amount,
        receipt=receipt,
        transaction_date=_daraja_datetime(items.get("TransactionDate")),
        phone=_text(items.get("PhoneNumber"), PHONE_MAX),
        unreadable=tuple(unreadable),
    )


def _amount(items: dict[str, object]) -> Decimal | None:
    amount = read_decimal(items.get("Amount"))
    if amount is None or not (0 <= amount < _MAX_AMOUNT) or amount != amount.quantize(Decimal("0.01")):
        return None
    return amount


def _receipt(items: dict[str, object]) -> str | None:
    value = items.get("MpesaReceiptNumber")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _RECEIPT.fullmatch(value.strip()):
        return None
    return value.strip()


def _items_by_name(metadata: object) -> dict[str, object]:
    if not isinstance(metadata, dict) or not isinstance(metadata.get("Item"), list):
        return {}
    return {
        item["Name"]: item.get("Value")
        for item in metadata["Item"]
        if isinstance(item, dict) and isinstance(item.get("Name"), str)
    }


def _text(value: object, limit: int | None = None) -> str | None:
    """Printable text, cut to `limit`: safe to store and to show."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = _UNPRINTABLE.sub(" ", str(value)).strip()
    if limit is not None:
        text = text[:limit].rstrip()
    return text or None


def _daraja_datetime(value: object) -> datetime | None:
    """Daraja writes 20191219102115 (a number, Nairobi time, YYYYMMDDHHmmss)."""
    text = _text(value)
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
    except ValueError:
        return None
