"""schemathesis against /openapi.json: generated requests over real HTTP to the app under uvicorn. No 5xx,
and every answer's status, content type and body match what the document promises."""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.stack import API_KEY, CALLBACK_TOKEN, Stack
from web.openapi import openapi_document

schema = schemathesis.openapi.from_dict(openapi_document(min_amount=10, max_amount=70_000))  # the Stack's limits
# JSON Schema cannot say "no NUL anywhere in the body", and the app refuses one with a 400 at the edge (PostgreSQL
# cannot store it): that rule has its own test (test_review_security_entrypoints), so generated strings leave it out.
schema.config.generation.update(allow_x00=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sqlite_template):
    path = tmp_path_factory.mktemp("fuzz") / "db.sqlite"
    shutil.copy(sqlite_template, path)
    stack = Stack(f"sqlite+aiosqlite:///{path}")
    yield stack
    stack.stop()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_keeps_its_promises(case, stack):
    case.call_and_validate(base_url=stack.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=20)


@schema.include(path_regex="/callback/").parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_callbacks_with_the_right_token_never_fail_the_server(case, stack):
    """Safaricom is the only caller that knows the token: whatever it sends is stored and answered, never a 5xx."""
    case.path_parameters = {**(case.path_parameters or {}), "token": CALLBACK_TOKEN}
    # Leniency is the contract here (nothing from Safaricom is dropped: an odd body is stored and answered), so a
    # schema-violating callback being accepted is not a failure; every other check applies.
    case.call_and_validate(base_url=stack.url, timeout=20, excluded_checks=[negative_data_rejection])
