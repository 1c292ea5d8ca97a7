"""ussd/hop.py: a hop reads its session and who is calling at once (one wait, not two), and a hop that needs
no caller (a replay) is answered without waiting for that read, or failing with it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from core.dialogue.service import DialogueDeps
from core.dialogue.sessions import UssdSession
from core.payments.service import PaymentLimits
from tests.fakes import FakeClock, FakeStore, FakeUnitOfWork
from ussd.hop import Hop, UssdDeps, answer

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PHONE = "254712345678"


class GatedSessions:
    """A session store whose reads wait for `release`; records who asked, in order."""

    def __init__(self, events: list[str], stored: UssdSession | None = None) -> None:
        self.events, self.stored, self.release = events, stored, asyncio.Event()
        self.saved: list[UssdSession] = []

    async def open(self, session_id, *, phone, since):
        self.events.append("session read started")
        await self.release.wait()
        return (self.stored, 0) if self.stored else (None, 0)

    async def save(self, record, *, expected_hops):
        self.saved.append(record)
        return True

    async def get(self, session_id):
        return self.stored


class Callers:
    def __init__(self, events: list[str], *, fails: bool = False, hangs: bool = False) -> None:
        self.events, self.fails, self.hangs = events, fails, hangs

    async def lookup(self, phone):
        self.events.append("caller read started")
        if self.hangs:
            await asyncio.Event().wait()
        if self.fails:
            raise ConnectionError("database away")
        return None, []


def deps(sessions, callers) -> UssdDeps:
    dialogue = DialogueDeps(uow=lambda: FakeUnitOfWork(FakeStore()), limits=PaymentLimits(10, 70_000),
                            clock=FakeClock(NOW), history=None, callers=callers)  # type: ignore[arg-type]
    return UssdDeps(dialogue=dialogue, sessions=sessions)


async def test_the_caller_is_read_while_the_session_read_is_still_waiting():
    events: list[str] = []
    sessions = GatedSessions(events)
    hop = asyncio.ensure_future(answer(Hop("s1", "+" + PHONE, ""), deps(sessions, Callers(events))))
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(events) == ["caller read started", "session read started"]  # both in flight, neither done
    sessions.release.set()
    result = await hop
    assert result.outcome == "con" and result.text.startswith("CON ")
    assert [saved.session_id for saved in sessions.saved] == ["s1"]


async def test_a_replay_is_answered_without_the_caller_read_and_its_failure_is_not_the_hops():
    stored = UssdSession(session_id="s1", phone=PHONE, state={}, last_text="1", last_answer="CON stored answer",
                         hops=2, ended=False, created_at=NOW, updated_at=NOW)
    for callers in (Callers([], hangs=True), Callers([], fails=True)):
        sessions = GatedSessions([], stored)
        sessions.release.set()
        result = await asyncio.wait_for(answer(Hop("s1", "+" + PHONE, "1"), deps(sessions, callers)), 5)
        assert (result.text, result.outcome) == ("CON stored answer", "replay")
        assert sessions.saved == []


UNUSED_RANGE = "+254150123456"  # `+2541…` in form, but no range of Kenya's plan: normalize_kenyan_mobile refuses it


async def test_a_plus_254_number_outside_the_plan_is_refused_before_the_session_is_placed():
    """The hop's `254…` form is read off the text to start both reads; a number no session vouches for
    is still checked against the plan, and refused as any non-Kenyan number, whatever the session holds."""
    others = UssdSession(session_id="s1", phone=PHONE, state={}, last_text="", last_answer="CON menu",
                         hops=1, ended=False, created_at=NOW, updated_at=NOW)
    for stored in (None, others):
        sessions = GatedSessions([], stored)
        sessions.release.set()
        result = await answer(Hop("s1", UNUSED_RANGE, "1"), deps(sessions, Callers([])))
        assert result.outcome == "refused" and "Kenyan M-Pesa numbers only" in result.text
        assert sessions.saved == []


async def test_a_next_hop_from_the_sessions_own_number_goes_on():
    stored = UssdSession(session_id="s1", phone=PHONE, state={}, last_text="", last_answer="CON menu",
                         hops=1, ended=False, created_at=NOW, updated_at=NOW)
    sessions = GatedSessions([], stored)
    sessions.release.set()
    result = await answer(Hop("s1", "+" + PHONE, "1"), deps(sessions, Callers([])))
    assert result.outcome == "con"
    assert [(saved.phone, saved.hops, saved.last_text) for saved in sessions.saved] == [(PHONE, 2, "1")]
