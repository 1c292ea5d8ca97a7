"""Job kinds and payloads: stored rows keep the strings and keys they always had, and read back typed."""

from __future__ import annotations

import pytest

from core.jobs.kinds import (
    PAYLOADS,
    JobKind,
    Notify,
    NotifyEvent,
    PushStk,
    RunTopUp,
    VerifyPayment,
    enqueue,
    handler_table,
)
from tests.fakes import FakeUnitOfWork

# What rows written before JobKind existed hold; they must stay readable.
STORED = [
    ("push_stk", {"payment_id": "p1"}, PushStk("p1")),
    ("verify_payment", {"payment_id": "p1"}, VerifyPayment("p1")),
    ("topup", {"topup_id": "t1"}, RunTopUp("t1")),
    ("notify", {"event": "payment_failed", "payment_id": "p1"}, Notify(NotifyEvent.PAYMENT_FAILED, payment_id="p1")),
    ("notify", {"event": "topup_review", "topup_id": "t1"}, Notify(NotifyEvent.TOPUP_REVIEW, topup_id="t1")),
]


@pytest.mark.parametrize("kind, payload, typed", STORED)
def test_stored_rows_read_back_and_are_written_the_same(kind, payload, typed):
    assert PAYLOADS[JobKind(kind)].from_dict(payload) == typed
    assert typed.kind.value == kind and typed.to_dict() == payload
    assert all(type(value) is str for value in typed.to_dict().values())  # plain JSON, no enum objects


def test_every_kind_has_one_payload_type():
    assert set(PAYLOADS) == set(JobKind)


def test_an_unknown_notify_event_is_refused():
    with pytest.raises(ValueError):
        Notify.from_dict({"event": "party", "payment_id": "p1"})


async def test_enqueue_stores_the_kind_string_and_the_handler_gets_the_type():
    uow = FakeUnitOfWork()
    async with uow:
        await enqueue(uow.jobs, Notify(NotifyEvent.TOPUP_APPLIED, topup_id="t1"))
        await uow.commit()
    [job] = uow.store.jobs
    assert (type(job.kind), job.kind, job.payload) == (str, "notify", {"event": "topup_applied", "topup_id": "t1"})
    seen = []

    async def handle(payload):
        seen.append(payload)

    table = handler_table({JobKind.NOTIFY: handle})
    assert list(table) == ["notify"]
    await table[job.kind](job.payload)
    assert seen == [Notify(NotifyEvent.TOPUP_APPLIED, topup_id="t1")]
