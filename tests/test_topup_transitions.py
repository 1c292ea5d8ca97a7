"""TopUp's guarded transitions: every allowed move works, every other one is refused and changes nothing."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.shared.errors import Conflict
from core.topups.model import TRANSITIONS, IllegalTopUpTransition, TopUp, TopUpStatus

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
Q, S, A, F, R = (TopUpStatus.QUEUED, TopUpStatus.SENDING, TopUpStatus.APPLIED, TopUpStatus.FAILED,
                 TopUpStatus.NEEDS_REVIEW)


def topup(status: TopUpStatus, **fields) -> TopUp:
    return TopUp(id="t1", meter_id="m1", amount=Decimal("500"), created_at=NOW, updated_at=NOW, status=status,
                 **fields)


# Each method with the status it moves to (for `back_off`, given nothing was sent).
MOVES = {
    "claim": (S, lambda t: t.claim(now=LATER, lease_until=LATER + timedelta(minutes=3))),
    "back_off": (Q, lambda t: t.back_off(error="busy", retry_at=LATER + timedelta(seconds=10), now=LATER)),
    "mark_applied": (A, lambda t: t.mark_applied(by="worker", now=LATER)),
    "give_up_failed": (F, lambda t: t.give_up(F, error="refused", now=LATER)),
    "give_up_review": (R, lambda t: t.give_up(R, error="counter moved", now=LATER)),
    "requeue": (Q, lambda t: t.requeue(now=LATER)),
    "dismiss": (F, lambda t: t.dismiss(now=LATER)),
}
ALLOWED = {
    (Q, "claim"), (S, "claim"), (S, "back_off"), (S, "mark_applied"), (S, "give_up_failed"),
    (S, "give_up_review"), (F, "requeue"), (R, "mark_applied"), (R, "requeue"), (R, "dismiss"),
}


def test_the_table_is_what_the_methods_allow():
    assert {Q: {S}, S: {S, Q, A, F, R}, F: {Q}, R: {A, Q, F}, A: set()} == TRANSITIONS
    reached = {(start, MOVES[name][0]) for start, name in ALLOWED}
    assert reached == {(start, to) for start, targets in TRANSITIONS.items() for to in targets}


@pytest.mark.parametrize("start", list(TopUpStatus))
@pytest.mark.parametrize("name", list(MOVES))
def test_each_move_from_each_status(start, name):
    item = topup(start)
    target, move = MOVES[name]
    if (start, name) in ALLOWED:
        move(item)
        assert item.status is target and item.updated_at == LATER
    else:
        before = copy.deepcopy(item)
        with pytest.raises(IllegalTopUpTransition) as refused:
            move(item)
        assert isinstance(refused.value, Conflict) and refused.value.code == "illegal_transition"
        assert item == before  # a refused move changes nothing


def test_claim_counts_the_attempt_and_holds_a_lease():
    item = topup(Q, attempts=2)
    item.claim(now=LATER, lease_until=LATER + timedelta(minutes=3))
    assert (item.attempts, item.next_attempt_at) == (3, LATER + timedelta(minutes=3))


def test_back_off_keeps_the_slot_while_a_send_may_be_in_the_air():
    item = topup(S, sent_at=NOW)
    item.back_off(error="x" * 600, retry_at=LATER, now=LATER)
    assert item.status is S and len(item.last_error) == 500 and item.next_attempt_at == LATER


def test_a_new_review_forgets_the_old_resolution_and_applied_records_who():
    item = topup(S, resolved_at=NOW, resolved_by="ops")
    item.give_up(R, error="counter moved", now=LATER)
    assert (item.resolved_at, item.resolved_by, item.next_attempt_at) == (None, None, None)
    item.mark_applied(by="ops", now=LATER)
    assert (item.status, item.applied_by, item.applied_at) == (A, "ops", LATER)


def test_requeue_starts_the_attempts_again():
    item = topup(F, attempts=12)
    item.requeue(now=LATER)
    assert (item.status, item.attempts, item.next_attempt_at) == (Q, 0, LATER)


def test_give_up_takes_only_an_end_state():
    with pytest.raises(IllegalTopUpTransition):
        topup(S).give_up(A, error="no", now=LATER)
