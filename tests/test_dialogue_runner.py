"""The one dialogue runner every channel uses (core.dialogue.runner), on in-memory fakes: restoring a
stored state, the channel's payments list, and the live balance read bounded by the channel's time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.dialogue import machine
from core.dialogue.runner import DialogueRunner
from core.dialogue.service import ChannelRules, DialogueDeps
from core.dialogue.types import DialogueState, PaymentLine
from core.meters.model import Meter
from core.payments.model import Channel
from core.payments.service import PaymentLimits
from core.tenants.model import Tenant
from tests.fakes import FakeClock, FakeStore, FakeUnitOfWork

PHONE = "254712345678"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


class History:
    def __init__(self, count: int) -> None:
        self.lines = [PaymentLine(at=NOW - timedelta(days=i), meter_number="A101", amount=100 + i, status="completed")
                      for i in range(count)]
        self.asked: list[int] = []

    async def recent(self, phone: str, limit: int) -> list[PaymentLine]:
        self.asked.append(limit)
        return self.lines[:limit]


class Reader:
    """A live meter read that answers `value`, or never answers when `value` is None."""

    def __init__(self, value: Decimal | None) -> None:
        self.value = value

    async def read_balance(self, meter: Meter) -> Decimal | None:
        if self.value is None:
            await asyncio.Event().wait()
        return self.value


def runner(*, history=None, reader=None, **rules) -> DialogueRunner:
    store = FakeStore()
    meter = Meter(id="m1", number="A101", name="Flat A1", device_id="d1", last_balance=Decimal("420.5"),
                  last_balance_at=NOW - timedelta(minutes=7))
    store.meters[meter.id] = meter
    store.tenants["t1"] = Tenant(id="t1", phone=PHONE)
    store.links.add(("t1", "m1"))
    deps = DialogueDeps(uow=lambda: FakeUnitOfWork(store), limits=PaymentLimits(10, 70_000), clock=FakeClock(NOW),
                        history=history or History(0), balance_reader=reader)
    return DialogueRunner(deps, ChannelRules(channel=Channel.TELEGRAM, **{"balance_timeout_s": 1.0, **rules}))


def test_restore_starts_afresh_for_nothing_or_an_unreadable_state():
    run = runner()
    state = DialogueState(language="sw")
    assert run.restore(state.model_dump(mode="json"), where="chat 1") == state
    assert run.restore(None, where="chat 1") is None
    assert run.restore({"frame": "not a frame"}, where="chat 1") is None


async def test_payments_list_as_long_as_the_channel_wants():
    for history_lines, shown in ((None, 3), (5, 5)):
        history = History(6)
        run = runner(history=history, history_lines=history_lines)
        caller = await run.caller(PHONE, payment_key=None)
        step = await run.drive(machine.handle(machine.start(caller).state, "3", caller), caller)
        assert step.screen.name == "payments" and len(step.state.payments) == shown
        assert history.asked == [shown] and len(step.screen.lines) == shown


async def test_live_balance_within_the_channel_time_else_the_last_known_value():
    for reader, amount, live in ((Reader(Decimal("99.5")), Decimal("99.5"), True),
                                 (Reader(None), Decimal("420.5"), False)):
        run = runner(reader=reader, balance_timeout_s=0.05)
        caller = await run.caller(PHONE, payment_key=None)
        assert [m.number for m in caller.meters] == ["A101"]
        # The outer limit only keeps a broken bound from hanging the suite.
        step = await asyncio.wait_for(run.drive(machine.handle(machine.start(caller).state, "2", caller), caller), 10)
        assert step.state.balance.amount == amount and step.state.balance.live is live
