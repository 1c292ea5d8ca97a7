"""Daraja C2B bodies as Safaricom documents them (v2: the MSISDN is masked or hashed)."""

from __future__ import annotations

import json
from typing import Any

HASHED_MSISDN = "2b4bc2e1e7a2f8b38b8a4f4c3ae1e7e5d6bb7c3c1d6e3c0b8a4f4c3ae1e7e5d6"


def c2b_body(trans_id: str = "SGR7ABC123", *, amount: Any = "100.00", account: Any = "A101",
             kind: str = "Pay Bill", msisdn: str = HASHED_MSISDN, shortcode: str = "600000", **extra: Any) -> dict:
    body = {
        "TransactionType": kind, "TransID": trans_id, "TransTime": "20240612101500", "TransAmount": amount,
        "BusinessShortCode": shortcode, "BillRefNumber": account, "InvoiceNumber": "", "OrgAccountBalance": "",
        "ThirdPartyTransID": "", "MSISDN": msisdn, "FirstName": "WANJIKU", "MiddleName": "", "LastName": "K***",
    }
    body.update(extra)
    return body


def c2b_bytes(*args: Any, **kwargs: Any) -> bytes:
    return json.dumps(c2b_body(*args, **kwargs)).encode()
