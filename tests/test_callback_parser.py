import json
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from core.payments.callbacks import MalformedCallback, parse_stk_callback
from tests import samples


def test_success_sample_items_by_name():
    cb = parse_stk_callback(json.dumps(samples.SUCCESS))
    assert cb.succeeded and cb.result_code == "0"
    assert cb.checkout_request_id == "ws_CO_191220191020363925"
    assert cb.amount == Decimal("1.0")
    assert cb.receipt == "NLJ7RT61SV"
    assert cb.transaction_date == datetime(2019, 12, 19, 10, 21, 15, tzinfo=ZoneInfo("Africa/Nairobi"))
    assert cb.phone == "254708374149"


def test_balance_without_value_and_items_out_of_order():
    cb = parse_stk_callback(json.dumps(samples.SUCCESS_WITH_BALANCE))
    assert cb.amount == Decimal(1) and cb.receipt == "LGR7OWQX0R" and cb.phone == "254721566839"


@pytest.mark.parametrize("sample,code", [
    (samples.CANCELLED, "1032"), (samples.WRONG_PIN, "2001"), (samples.TIMEOUT_1036, "1036"),
    (samples.EXPIRED_1019, "1019"), (samples.STRING_CODE, "SFC_IC0003"),
])
def test_failures_have_no_metadata_and_text_codes(sample, code):
    cb = parse_stk_callback(json.dumps(sample))
    assert not cb.succeeded
    assert cb.result_code == code
    assert cb.amount is None and cb.receipt is None


def test_masked_or_missing_phone_is_tolerated():
    doc = json.loads(json.dumps(samples.SUCCESS))
    items = doc["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    items[3]["Value"] = "2547*****149"
    assert parse_stk_callback(json.dumps(doc)).phone == "2547*****149"
    del items[3]
    assert parse_stk_callback(json.dumps(doc)).phone is None


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"Body": {}}', b'{"Body": {"stkCallback": {"ResultCode": 0}}}',
                                  b'{"Body": {"stkCallback": {"CheckoutRequestID": 5, "ResultCode": 0}}}'])
def test_malformed_bodies_are_refused(body):
    with pytest.raises(MalformedCallback):
        parse_stk_callback(body)
