"""One conversation turn for any channel: who is talking, the stored state restored, the dialogue driven
until it has a screen. A channel (USSD, Telegram, the next one) keeps only what is its own: how it
reads input and stores the state between inputs (transport, session storage) and how it shows a
`Screen` (rendering). Per input, a channel:

    state = runner.restore(row.state, where="…")           # None: start afresh
    caller = await runner.caller(phone, payment_key="…")
    step = machine.start(caller) if state is None else machine.handle(state, entry, caller)
    step = await runner.drive(step, caller)
    store(step.state); show(step.screen)
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from core.dialogue import machine
from core.dialogue.screens import draw
from core.dialogue.service import ChannelRules, DialogueDeps, caller_of, find_caller, perform
from core.dialogue.types import Caller, DialogueState, ListPayments, PaymentsListed, Step

log = logging.getLogger("lipameter.dialogue")

MAX_EFFECTS_PER_INPUT = 4  # a step asks for at most one effect; this only guards against a loop


class DialogueRunner:
    def __init__(self, deps: DialogueDeps, rules: ChannelRules) -> None:
        self.deps, self.rules = deps, rules

    async def caller(self, phone: str, *, payment_key: str | None, network_code: str = "") -> Caller:
        """Who is talking, loaded afresh for each input (a landlord may have linked a meter meanwhile).
        `network_code` is the mobile network the gateway says the caller is on (USSD), if known."""
        if self.deps.callers is not None:
            tenant, meters = await self.deps.callers.lookup(phone)
        else:
            tenant, meters = await find_caller(phone, self.deps.uow())
        return caller_of(phone, tenant, meters, limits=self.deps.limits, payment_key=payment_key,
                         network_code=network_code, paybill=self.deps.paybill)

    def restore(self, stored: dict | None, *, where: str) -> DialogueState | None:
        """The state a channel stored as JSON, or None to start afresh (nothing stored, or written by an
        older release: starting again is better than guessing). `where` names the row in the log."""
        if stored is None:
            return None
        try:
            return DialogueState.model_validate(stored)
        except ValidationError:
            log.warning("%s: unreadable state", where)
            return None

    async def drive(self, step: Step, caller: Caller) -> Step:
        """Perform the step's effects and resume until the dialogue has a screen to show."""
        for _ in range(MAX_EFFECTS_PER_INPUT):
            if step.effect is None:
                return step
            effect = step.effect
            if isinstance(effect, ListPayments) and self.rules.history_lines:
                effect = ListPayments(limit=self.rules.history_lines)
            outcome = await perform(effect, caller, self.deps, self.rules)
            step = machine.resume(step.state, outcome, caller)
            if isinstance(outcome, PaymentsListed) and self.rules.history_lines and step.screen is not None:
                step = self._with_history(step, outcome, caller)
        raise RuntimeError("the dialogue kept asking for effects")

    def _with_history(self, step: Step, listed: PaymentsListed, caller: Caller) -> Step:
        """The dialogue keeps as many payments as a USSD screen holds; a channel with room shows its own
        `history_lines` instead."""
        state = step.state.model_copy(update={"payments": listed.items[:self.rules.history_lines]})
        state, screen = draw(state, caller)
        return Step(state=state, screen=screen)
