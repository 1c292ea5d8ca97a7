"""One USSD hop: Africa's Talking's form in, `CON`/`END` text out, the dialogue's state kept per sessionId.

Africa's Talking posts the whole conversation so far in `text` (`1*2*500`), so only what follows the
previous hop's text is new. A gateway retry repeats a hop's `text` exactly: we answer it with the stored
answer and run nothing, so a retried confirm can never start a second payment (the payment's
idempotency key, `ussd:<sessionId>`, covers a retry that races the original). A first hop may carry
input already (a dialled shortcut): see `_first_hop`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from core.dialogue import machine as dialogue
from core.dialogue import texts
from core.dialogue.runner import DialogueRunner
from core.dialogue.screens import BUY_CONFIRM
from core.dialogue.service import ChannelRules, DialogueDeps
from core.dialogue.sessions import UssdSession
from core.dialogue.types import Caller, DialogueState, Screen, Step
from core.payments.model import Channel
from core.ports import UssdSessionStore
from core.shared.errors import InvalidInput
from core.shared.phone import mask_phone, normalize_kenyan_mobile, stored_form
from ussd.render import to_text

log = logging.getLogger("lipameter.ussd")
T = TypeVar("T")

MAX_SESSION_ID = 100
MAX_FIELD = 40
MAX_TEXT = 1000  # dozens of hops; a real session times out long before
# A person opens a few sessions an hour; a script opening thousands would fill ussd_sessions (and
# Africa's Talking does not sign hops, so USSD_ALLOWED_IPS may be all that stands in front of us).
MAX_NEW_SESSIONS_PER_HOUR = 20


@dataclass(frozen=True)
class UssdConfig:
    push_delay_s: float = 5.0  # the STK prompt is sent this long after the confirm hop (session closed by then)
    balance_timeout_s: float = 1.5  # Africa's Talking gives a hop a few seconds; the meter gets this much


@dataclass(frozen=True)
class Hop:
    session_id: str
    phone: str
    text: str
    service_code: str = ""
    network_code: str = ""


@dataclass(frozen=True)
class Answer:
    text: str
    outcome: str  # con | end | replay | expired | refused: for metrics and logs


@dataclass(frozen=True)
class UssdDeps:
    """The shared dialogue deps plus what only USSD has: its session store and its timings."""

    dialogue: DialogueDeps
    sessions: UssdSessionStore
    config: UssdConfig = field(default_factory=UssdConfig)

    @functools.cached_property  # one per process: it holds nothing a hop changes
    def runner(self) -> DialogueRunner:
        return DialogueRunner(self.dialogue, ChannelRules(
            channel=Channel.USSD, balance_timeout_s=self.config.balance_timeout_s,
            push_delay_s=self.config.push_delay_s))


def ending(message: str) -> str:
    return to_text(Screen(name="bye", title=message, end=True))


def parse_hop(form: dict[str, list[str]]) -> Hop | None:
    """Africa's Talking's fields; None when the request cannot be a USSD hop at all."""
    def first(name: str) -> str:
        values = form.get(name) or [""]
        return values[0]

    session_id = first("sessionId").strip()
    if not session_id or len(session_id) > MAX_SESSION_ID or not session_id.isprintable():
        return None
    return Hop(session_id=session_id, phone=first("phoneNumber").strip()[:MAX_FIELD], text=first("text"),
               service_code=first("serviceCode")[:MAX_FIELD], network_code=first("networkCode")[:16])


def new_input(text: str, last_text: str) -> str:
    """What the user typed this hop. Normally the last `*` segment; when the text extends the previous
    hop's, everything after it (so a reply typed as `1*2` is one wrong entry, not a silent `2`)."""
    if last_text == "":
        return text
    if text.startswith(last_text + "*"):
        return text[len(last_text) + 1:]
    return text.rsplit("*", 1)[-1]


async def answer(hop: Hop, deps: UssdDeps) -> Answer:
    # Africa's Talking sends `+2547…`: its stored form is known without phonenumbers, which is asked only
    # when the hop's session does not vouch for the number (see _vouched).
    phone = stored_form(hop.phone)
    checked = phone is None
    if checked:
        try:
            phone = normalize_kenyan_mobile(hop.phone)
        except InvalidInput:  # nor is it ever a replay: that is only for the phone that made the hop
            return Answer(ending(texts.BILINGUAL_NOT_KENYAN), "refused")
    runner, now = deps.runner, deps.dialogue.clock.now()  # one time for the hop: its read and its write
    # Who is calling is read while the session is: two reads in flight at once, one wait (and under a rush,
    # each shares its statement with more hops). A hop answered without it (a replay, a refusal) drops it.
    caller_read = _started(runner.caller(phone, payment_key=f"ussd:{hop.session_id}", network_code=hop.network_code))
    try:
        # The session and, for a new one, the phone's recent sessions: one read.
        record, opened = await deps.sessions.open(hop.session_id, phone=phone,
                                                  since=now - timedelta(hours=1))
        if not (checked or _vouched(record, phone) or _kenyan_mobile(hop.phone)):
            return Answer(ending(texts.BILINGUAL_NOT_KENYAN), "refused")
        early, state = _placed(hop, phone, record, opened, runner)
        if early is not None:
            return early
        caller = await caller_read
    finally:
        caller_read.cancel()  # unneeded (or the session read failed); does nothing once it is done
    if record is None:
        step = await _first_hop(hop.text, caller, runner)
    else:
        step = await runner.drive(dialogue.handle(state, new_input(hop.text, record.last_text), caller), caller)
    text = to_text(step.screen)
    if await deps.sessions.save(_record(hop, phone, step, text, record, now),
                                expected_hops=record.hops if record else None):
        return Answer(text, "end" if step.screen.end else "con")
    # The same hop twice at once (a gateway retry racing the original): answer as the winner did.
    winner = await deps.sessions.get(hop.session_id)
    if winner is not None and winner.last_text == hop.text:
        return Answer(winner.last_answer, "replay")
    log.warning("ussd session %s: a concurrent hop overtook this one", hop.session_id)
    return Answer(text, "end" if step.screen.end else "con")


def _vouched(record: UssdSession | None, phone: str) -> bool:
    """A stored session's phone passed normalize_kenyan_mobile on the session's first hop: a hop from the
    same number needs no second look (the next hops of every session, the bulk of USSD traffic)."""
    return record is not None and record.phone == phone


def _kenyan_mobile(raw: str) -> bool:
    try:
        normalize_kenyan_mobile(raw)
    except InvalidInput:
        return False
    return True


def _placed(hop: Hop, phone: str, record: UssdSession | None, opened: int,
            runner: DialogueRunner) -> tuple[Answer | None, DialogueState | None]:
    """(an answer when the hop goes no further, the state to go on from: None for a new session)."""
    # A replay is only for the phone that made the hop (it may show a balance or a history).
    if record is not None and record.last_text == hop.text and record.phone == phone:
        return Answer(record.last_answer, "replay"), None
    state = _resumable(record, phone, runner)
    if len(hop.text) > MAX_TEXT or (record is not None and state is None):
        # A hop we cannot place (a session already over, or another phone's): never guess, never pay.
        return Answer(ending(_expired(record)), "expired"), None
    if record is None and opened >= MAX_NEW_SESSIONS_PER_HOUR:
        log.warning("ussd: %s opened %d sessions in an hour; refused", mask_phone(phone), MAX_NEW_SESSIONS_PER_HOUR)
        return Answer(ending(texts.BILINGUAL_TOO_MANY), "refused"), None
    return None, state


def _started(read: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """`read` running on its own from now; if it fails and nobody awaits it, its error is dropped quietly
    (it was not needed)."""
    task = asyncio.get_running_loop().create_task(read)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task


async def _first_hop(text: str, caller: Caller, runner: DialogueRunner) -> Step:
    """A new session. Dialling a shortcut (`*384*1234*1*A101*500#`) makes the first hop carry input
    already (`text` = `1*A101*500`): each `*` segment is entered as if typed, one after another, until
    the dialogue ends or the segments run out; the session goes on from the screen reached.

    A shortcut never confirms a payment by itself: at the confirm screen the rest is dropped and the
    tenant answers it live. (A first hop we never saw may also be a lost session's mid-path hop, and
    its last segment a confirm: showing the screen again is right in both cases.)"""
    step = await runner.drive(dialogue.start(caller), caller)
    for entry in text.split("*") if text else ():
        if step.screen.end or step.screen.name == BUY_CONFIRM:
            break
        step = await runner.drive(dialogue.handle(step.state, entry, caller), caller)
    return step


def _resumable(record: UssdSession | None, phone: str, runner: DialogueRunner) -> DialogueState | None:
    if record is None or record.ended or record.phone != phone:
        return None
    return runner.restore(record.state, where=f"ussd session {record.session_id}")


def _expired(record: UssdSession | None) -> str:
    language = (record.state or {}).get("language") if record else None
    return texts.text(language, "expired") if language in texts.LANGUAGES else texts.BILINGUAL_EXPIRED


def _record(hop: Hop, phone: str, step: Step, text: str, previous: UssdSession | None, now: datetime) -> UssdSession:
    if step.screen.end:
        log.info("ussd session %s from %s ended at %s", hop.session_id, mask_phone(phone), step.screen.name)
    return UssdSession(
        session_id=hop.session_id, phone=phone, state=step.state.model_dump(mode="json"), last_text=hop.text,
        last_answer=text, hops=(previous.hops if previous else 0) + 1, ended=step.screen.end,
        created_at=previous.created_at if previous else now, updated_at=now,
        service_code=hop.service_code or None, network_code=hop.network_code or None,
        payment_id=step.state.payment_id,
    )
