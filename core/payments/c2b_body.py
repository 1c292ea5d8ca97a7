"""Parse Daraja's C2B validation and confirmation bodies (Customer To Business, v2).

Both carry the same flat JSON object: TransactionType ("Pay Bill", "Buy Goods"), TransID (the M-Pesa
receipt), TransTime (YYYYMMDDHHmmss, Nairobi), TransAmount ("100.00"), BusinessShortCode,
BillRefNumber (the account number the payer typed; empty for a Till), InvoiceNumber,
OrgAccountBalance, ThirdPartyTransID, MSISDN and FirstName/MiddleName/LastName. In v2 the MSISDN is
masked (`2547 ***** 126`) or hashed and the names may be masked: they are kept as they arrive, shown
to a person, and never relied on (a phone number is used only when it is a whole Kenyan mobile).

Nothing parsed here can break the database: text loses control characters and is cut to its column.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.payments.callbacks import MalformedCallback, _daraja_datetime, _text
from core.shared.errors import InvalidInput
from core.shared.money import read_decimal
from core.shared.phone import normalize_kenyan_mobile

TRANS_ID = re.compile(r"[A-Za-z0-9]{1,32}")  # payments.mpesa_receipt is 32 characters
_MAX_AMOUNT = Decimal("1e12")  # Numeric(14, 2)
ACCOUNT_KEPT, NAME_KEPT, MSISDN_KEPT, TYPE_KEPT = 100, 120, 64, 32


@dataclass(frozen=True)
class C2bBody:
    trans_id: str
    transaction_type: str
    amount: Decimal | None  # None: missing or unreadable (not a number, more than 2 decimals)
    trans_time: datetime | None
    shortcode: str | None
    account: str | None  # BillRefNumber as typed (printable, cut); None for a Till without one
    raw_account: object  # BillRefNumber exactly as it came, for the account rule (which refuses junk)
    msisdn: str | None
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None

    @property
    def payer_name(self) -> str | None:
        parts = [p for p in (self.first_name, self.middle_name, self.last_name) if p]
        return " ".join(parts)[:NAME_KEPT] or None

    @property
    def phone(self) -> str | None:
        """The payer's mobile when Daraja sends it in clear (v1, some v2 shortcodes); else None."""
        if not self.msisdn or not self.msisdn.isdigit():
            return None
        try:
            return normalize_kenyan_mobile(self.msisdn)
        except InvalidInput:
            return None

    @property
    def is_till(self) -> bool:
        return "goods" in self.transaction_type.lower() or "till" in self.transaction_type.lower()


def parse_c2b(body: bytes | str) -> C2bBody:
    try:
        document = json.loads(body)
    except ValueError:
        raise MalformedCallback("not JSON: a C2B body is a JSON object") from None
    if not isinstance(document, dict):
        raise MalformedCallback("a C2B body is a JSON object")
    trans_id = document.get("TransID")
    if isinstance(trans_id, int) and not isinstance(trans_id, bool):
        trans_id = str(trans_id)
    if not isinstance(trans_id, str) or not TRANS_ID.fullmatch(trans_id.strip()):
        raise MalformedCallback("TransID must be 1..32 letters or digits")
    return C2bBody(
        trans_id=trans_id.strip(),
        transaction_type=_text(document.get("TransactionType"), TYPE_KEPT) or "",
        amount=_amount(document.get("TransAmount")),
        trans_time=_daraja_datetime(document.get("TransTime")),
        shortcode=_text(document.get("BusinessShortCode"), 16),
        account=_text(document.get("BillRefNumber"), ACCOUNT_KEPT),
        raw_account=document.get("BillRefNumber"),
        msisdn=_text(document.get("MSISDN"), MSISDN_KEPT),
        first_name=_text(document.get("FirstName"), NAME_KEPT),
        middle_name=_text(document.get("MiddleName"), NAME_KEPT),
        last_name=_text(document.get("LastName"), NAME_KEPT),
    )


def _amount(value: object) -> Decimal | None:
    amount = read_decimal(value)
    if amount is None or abs(amount) >= _MAX_AMOUNT or amount != amount.quantize(Decimal("0.01")):
        return None
    return amount
