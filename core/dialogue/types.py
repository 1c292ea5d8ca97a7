"""The purchase dialogue's vocabulary, shared by every channel that renders it (USSD, Telegram).

- `Screen` is what to show: a title, body `lines`, `options` (key, label) a user picks by typing the key
  or pressing a button, `nav` (back/home), an optional short `error`, and `end` when the conversation
  is over. `expects` says when free text is wanted (a meter number, an amount).
- `Effect` is something the dialogue needs done outside itself (look a meter up, read a balance, list
  payments, start a payment, save the language). `core.dialogue.runner.DialogueRunner` performs it
  through the core services (`core.dialogue.service.perform`) and feeds the `Outcome` back with
  `machine.resume`.
- `DialogueState` is everything the dialogue remembers between two inputs; it is a pydantic model so a
  channel can store it as JSON (in the rows of core.dialogue.sessions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

# --- what a channel shows ---------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """A body line. `keep` > 0 marks data (a meter name) that a small screen may shorten down to its
    first `keep` characters; `None` means our own wording, never shortened."""

    text: str
    keep: int | None = None
    optional: bool = False  # a small screen (USSD) may leave it out when everything else does not fit


@dataclass(frozen=True)
class Option:
    key: str  # what the user types on USSD; the callback data of a Telegram button
    label: str
    keep: int | None = None  # as for Line: how much of a long label must survive shortening


@dataclass(frozen=True)
class Screen:
    name: str  # stable id (`main`, `buy_amount`, `bye_started`…) for tests, metrics and bots
    title: str
    lines: tuple[Line, ...] = ()
    options: tuple[Option, ...] = ()
    nav: tuple[Option, ...] = ()  # `0` back, `00` home; a bot may render them as buttons too
    error: str | None = None  # a short re-prompt message, shown above the title
    notice: str | None = None  # a short confirmation ("Language saved."), shown above the title
    end: bool = False  # the conversation is over after this screen
    expects: str | None = None  # "meter_number" | "amount" | "phone" | "level" when free text is the answer

    @property
    def body(self) -> list[str]:
        return [line.text for line in self.lines]


# --- what the dialogue remembers --------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class MeterChoice(_Model):
    number: str
    name: str


class Frame(_Model):
    """One screen in the history stack: which screen, which list page, and what was chosen so far."""

    screen: str
    page: int = 0
    meter: MeterChoice | None = None
    amount: int | None = None
    payer: str | None = None  # another M-Pesa number (2547…) paying instead of the caller's own


class AlertInfo(_Model):
    """A tenant's low-balance alert for one meter: on or off, and below what it is sent."""

    enabled: bool = True
    threshold: Decimal | None = None  # the tenant's own level; None: the meter's (landlord's or automatic)
    meter_threshold: Decimal | None = None  # the meter's level now (None: not enough history to know yet)
    unit: str = "KES"  # the meter's balance unit: KES, or kWh for energy meters


class BalanceInfo(_Model):
    meter: MeterChoice
    amount: Decimal | None  # KES left on the meter; None when never read
    age_s: int | None = None  # how old a last known value is; None when live or unknown
    live: bool = False
    days_left: int | None = None  # at the meter's usual use; None under 3 days of readings or no recent one
    alert: AlertInfo | None = None  # the caller's alert setting for this meter (None: not a tenant)


class PaymentLine(_Model):
    at: datetime
    meter_number: str
    amount: int
    status: str  # core.payments.model.PaymentStatus value


class DialogueState(_Model):
    language: str = "en"
    frame: Frame = Frame(screen="main")
    history: tuple[Frame, ...] = ()
    choices: tuple[MeterChoice, ...] = ()  # the meters on the list page shown last, in key order
    errors: int = 0  # wrong entries in a row; the third ends the conversation politely
    balance: BalanceInfo | None = None
    payments: tuple[PaymentLine, ...] = ()
    payment_id: str | None = None  # the payment this conversation started, if any
    ended: bool = False


@dataclass(frozen=True)
class Caller:
    """Who is talking, loaded before each step (see core.dialogue.runner.DialogueRunner.caller)."""

    phone: str  # 2547XXXXXXXX, the paying phone
    language: str = "en"  # the tenant's saved language, used when a conversation starts
    meters: tuple[MeterChoice, ...] = ()  # active meters linked to this phone, in display order
    min_amount: int = 1
    max_amount: int = 150_000
    tenant_id: str | None = None
    payment_key: str | None = None  # idempotency key for a payment started in this conversation
    prompt_ok: bool = True  # the caller's own line can get an STK prompt (a Safaricom line)
    paybill: str = ""  # PAYBILL_NUMBER: shown with a meter so tenants can pay from the M-Pesa menu too


# --- effects the caller performs, and their outcomes ------------------------------------------


@dataclass(frozen=True)
class FindMeter:
    number: str


@dataclass(frozen=True)
class ReadBalance:
    meter: MeterChoice


@dataclass(frozen=True)
class ListPayments:
    limit: int = 3


@dataclass(frozen=True)
class StartPayment:
    meter: MeterChoice
    amount: int
    payer: str | None = None  # the M-Pesa number the prompt goes to; None: the caller's own


@dataclass(frozen=True)
class SaveLanguage:
    language: str


@dataclass(frozen=True)
class SaveAlert:
    """Change the caller's low-balance alert for a meter: turn it on or off, set their own level
    (`threshold`, in the meter's unit) or go back to the meter's own (`automatic`)."""

    meter: MeterChoice
    enabled: bool | None = None
    threshold: int | None = None
    automatic: bool = False


Effect = FindMeter | ReadBalance | ListPayments | StartPayment | SaveLanguage | SaveAlert


@dataclass(frozen=True)
class MeterFound:
    number: str
    meter: MeterChoice | None  # None: no such meter
    active: bool = True


@dataclass(frozen=True)
class BalanceRead:
    balance: BalanceInfo


@dataclass(frozen=True)
class PaymentsListed:
    items: tuple[PaymentLine, ...]


@dataclass(frozen=True)
class PaymentRequested:
    ok: bool
    code: str | None = None  # core.shared.errors code when refused: payment_pending, meter_inactive, …
    payment_id: str | None = None


@dataclass(frozen=True)
class LanguageSaved:
    language: str


@dataclass(frozen=True)
class AlertSaved:
    alert: AlertInfo | None  # None: not saved (the meter is not the caller's)


Outcome = MeterFound | BalanceRead | PaymentsListed | PaymentRequested | LanguageSaved | AlertSaved


@dataclass(frozen=True)
class Step:
    """The dialogue's answer: the next state and either a screen to show or an effect to perform."""

    state: DialogueState
    screen: Screen | None = None
    effect: Effect | None = None
