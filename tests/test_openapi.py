"""The OpenAPI document says what the app does: its paths are the app's routes, and real answers carry
the fields the schemas require."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.routing import Route

from tests.stack import Stack
from web.openapi import openapi_document


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sqlite_template):
    import shutil

    path = tmp_path_factory.mktemp("openapi") / "db.sqlite"
    shutil.copy(sqlite_template, path)
    stack = Stack(f"sqlite+aiosqlite:///{path}", callback_allowed_ips="10.0.0.0/8",
                  trusted_proxies="127.0.0.1/32")
    yield stack
    stack.stop()


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_every_documented_path_is_served(stack):
    routes = {_template(r.path) for r in stack.app.routes if isinstance(r, Route)}
    documented = {_template(p) for p in openapi_document()["paths"]}
    assert documented <= routes
    assert {"/mpesa/payments", "/mpesa/payments/{}", "/mpesa/callback/{}"} <= documented


def _required(name: str) -> list[str]:
    return openapi_document()["components"]["schemas"][name]["required"]


def test_answers_carry_the_documented_fields(stack):
    started = stack.pay(amount=100)
    assert set(_required("PaymentStarted")) <= set(started.json())
    payment = stack.payment(started.json()["paymentId"])
    assert set(_required("Payment")) <= set(payment)
    status_enum = openapi_document()["components"]["schemas"]["Payment"]["properties"]["status"]["enum"]
    assert payment["status"] in status_enum
    refused = stack.pay(amount=1)
    assert refused.status_code == 422 and set(_required("Error")) <= set(refused.json())
    documented = openapi_document()["paths"]["/mpesa/payments"]["post"]["responses"]
    assert {"200", "422"} <= set(documented)


def test_callback_allowlist_and_trusted_proxy(stack):
    body = b'{"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_x", "ResultCode": 1032, "ResultDesc": "x"}}}'
    refused = httpx.post(stack.callback_url, content=body)  # from 127.0.0.1, not in 10.0.0.0/8
    assert refused.status_code == 403
    forwarded = httpx.post(stack.callback_url, content=body, headers={"X-Forwarded-For": "10.1.2.3"})
    assert forwarded.status_code == 200  # the trusted proxy (127.0.0.1) vouches for 10.1.2.3
    rows = stack.sql("SELECT source FROM mpesa_callbacks")
    assert [r.source for r in rows] == ["10.1.2.3"]
