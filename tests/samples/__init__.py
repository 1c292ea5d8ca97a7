"""Safaricom's STK callback samples, verbatim in shape (Daraja docs: M-Pesa Express, "Result")."""

import json

SUCCESS = {
    "Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 1.00},
            {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
            {"Name": "TransactionDate", "Value": 20191219102115},
            {"Name": "PhoneNumber", "Value": 254708374149},
        ]},
    }}
}

SUCCESS_WITH_BALANCE = {
    "Body": {"stkCallback": {
        "MerchantRequestID": "19465-780693-1",
        "CheckoutRequestID": "ws_CO_27072017154747416",
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 1},
            {"Name": "MpesaReceiptNumber", "Value": "LGR7OWQX0R"},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": 20170727154800},
            {"Name": "PhoneNumber", "Value": 254721566839},
        ]},
    }}
}


def failure(code, desc, checkout="ws_CO_191220191020363925"):
    return {"Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": checkout,
        "ResultCode": code, "ResultDesc": desc,
    }}}


CANCELLED = failure(1032, "Request cancelled by user")
WRONG_PIN = failure(2001, "The initiator information is invalid.")
TIMEOUT_1036 = failure(1036, "SMSC ACK timeout.")
EXPIRED_1019 = failure(1019, "Transaction has expired")
STRING_CODE = failure("SFC_IC0003", "The Operator does not exist.")


def with_ids(sample: dict, *, checkout: str, merchant: str = "MR-1", amount=None) -> bytes:
    doc = json.loads(json.dumps(sample))
    stk = doc["Body"]["stkCallback"]
    stk["CheckoutRequestID"], stk["MerchantRequestID"] = checkout, merchant
    if amount is not None:
        for item in stk["CallbackMetadata"]["Item"]:
            if item["Name"] == "Amount":
                item["Value"] = amount
    return json.dumps(doc).encode()
