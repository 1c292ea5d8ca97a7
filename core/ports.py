"""Ports: the small Protocols through which the core talks to the outside world. Every port is declared
here, and only here; the plain rows they carry live in the feature packages' model modules.

Adapters live in `gateways/` (real services) and `storage/` (the database); tests use fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from core.admin.model import AdminUser
from core.dialogue.sessions import TelegramAccount, TelegramChat, UssdSession, WhatsAppChat
from core.dialogue.types import PaymentLine
from core.jobs.model import Job
from core.meters.model import Meter
from core.notify.model import SentNotice
from core.payments.model import Payment, PaymentStatus
from core.shared.errors import UpstreamError
from core.tenants.model import Tenant
from core.topups.model import TopUp
from core.usage.model import DailyUsage, MeterUsage, Reading, TenantAlert


@dataclass(frozen=True)
class StkPushRequest:
    phone: str  # 2547XXXXXXXX
    amount: int  # whole KES
    account_reference: str  # the meter number, <= 12 chars
    description: str  # <= 13 chars


@dataclass(frozen=True)
class StkPushAccepted:
    merchant_request_id: str
    checkout_request_id: str
    customer_message: str


@dataclass(frozen=True)
class StkQueryResult:
    """Daraja's STK push query answer. `processing` is True for 500.001.1001 (ask again later)."""

    processing: bool
    result_code: str | None = None
    result_desc: str | None = None


class PaymentGateway(Protocol):
    """M-Pesa Express (Daraja). Raises core.shared.errors.UpstreamError with a tenant-readable message."""

    async def stk_push(self, request: StkPushRequest) -> StkPushAccepted: ...

    async def stk_query(self, checkout_request_id: str) -> StkQueryResult: ...


class Clock(Protocol):
    def now(self) -> datetime: ...  # timezone-aware UTC


# --- persistence ports ------------------------------------------------------------------------
# Repositories hand out plain dataclasses from core; `save` writes them back. Implementations raise
# core.shared.errors.Conflict when a uniqueness rule (one pending push per phone, idempotency key) is hit.


class MeterRepository(Protocol):
    async def add(self, meter: Meter) -> None: ...
    async def get(self, meter_id: str) -> Meter | None: ...
    async def get_by_number(self, number: str) -> Meter | None: ...
    async def by_account(self, key: str) -> list[Meter]: ...  # meters whose number's account_key is `key`
    async def list(self) -> list[Meter]: ...
    async def save(self, meter: Meter) -> None: ...


class TenantRepository(Protocol):
    async def add(self, tenant: Tenant) -> None: ...
    async def get(self, tenant_id: str) -> Tenant | None: ...
    async def unlink(self, tenant_id: str, meter_id: str) -> bool: ...  # False when there was no link
    async def get_by_phone(self, phone: str) -> Tenant | None: ...
    async def link(self, tenant_id: str, meter_id: str) -> None: ...
    async def meters_of(self, tenant_id: str) -> list[Meter]: ...
    async def linked_to(self, meter_id: str) -> list[Tenant]: ...  # the tenants who see this meter
    async def save(self, tenant: Tenant) -> None: ...  # the dialogue saves a tenant's language


class PaymentRepository(Protocol):
    async def add(self, payment: Payment) -> None: ...
    async def get(self, payment_id: str) -> Payment | None: ...
    async def get_by_checkout_id(self, checkout_request_id: str, *, for_update: bool = False) -> Payment | None: ...
    async def get_for_update(self, payment_id: str) -> Payment | None: ...
    async def get_by_idempotency_key(self, key: str) -> Payment | None: ...
    async def get_by_receipt(self, receipt: str) -> Payment | None: ...
    async def active_for_phone(self, phone: str) -> Payment | None: ...
    async def stale(self, status: str, *, before: datetime, limit: int = 100) -> list[Payment]: ...
    async def in_review(self) -> list[Payment]: ...
    async def save(self, payment: Payment) -> None: ...
    async def save_if(self, payment: Payment, *, was: PaymentStatus) -> bool:
        """save() in one guarded UPDATE, no locking read first: True when the stored row was still in
        status `was` (now written, and locked until commit), False when another transaction moved it on."""
        ...


class CallbackRepository(Protocol):
    """Daraja's raw bodies: STK callbacks (`kind` stk) and C2B validations and confirmations."""

    async def add(self, *, body: str, source: str | None, received_at: datetime, kind: str = "stk",
                  outcome: str = "received", trans_id: str | None = None, note: str | None = None,
                  checkout_request_id: str | None = None) -> int: ...
    async def set_outcome(
        self, callback_id: int, *, outcome: str, checkout_request_id: str | None, payment_id: str | None
    ) -> None: ...
    async def lock_checkout(self, checkout_request_id: str) -> None: ...
    async def received(self, limit: int) -> list[int]: ...  # kept STK callbacks not applied yet, oldest first
    # The body of a kept, unapplied callback, locked until commit; None when applied already or, without
    # `wait`, being applied by another worker right now.
    async def claim_received(self, callback_id: int, *, wait: bool) -> str | None: ...
    async def unresolved_orphans(self, limit: int = 100) -> list[tuple[int, str, datetime]]: ...
    async def unapplied(self, limit: int = 100) -> list[tuple[int, str | None, datetime]]: ...
    async def resolve_orphan(self, callback_id: int) -> bool: ...  # an orphan or an unapplied (`error`) one
    async def orphans_for(self, checkout_request_id: str) -> list[tuple[int, str]]: ...
    async def body(self, callback_id: int) -> str | None: ...
    # C2B confirmations, keyed on TransID
    async def set_c2b_outcome(self, callback_id: int, *, outcome: str, trans_id: str | None, payment_id: str | None,
                              note: str | None) -> None: ...
    async def c2b_claimed(self, trans_id: str, *, claims: tuple[str, ...]) -> bool: ...
    async def c2b_waiting(self, *, outcome: str, limit: int = 100) -> list[tuple[int, str, datetime, str | None]]: ...
    async def c2b_body(self, callback_id: int, *, outcome: str) -> str | None: ...  # locked until commit
    async def c2b_move(self, callback_id: int, *, from_outcome: str, to_outcome: str,
                       payment_id: str | None) -> bool: ...  # False when it was not `from_outcome`


class TopUpRepository(Protocol):
    async def add(self, topup: TopUp) -> None: ...
    async def get(self, topup_id: str, *, for_update: bool = False) -> TopUp | None: ...
    async def for_payment(self, payment_id: str) -> TopUp | None: ...
    async def by_request_key(self, key: str) -> TopUp | None: ...
    # Conflict when a second top-up for a meter goes `sending`. With `held_by`, only while that worker still
    # holds the attempt's claim (core.topups.model.ClaimLost otherwise): a worker taken over cannot write back.
    async def save(self, topup: TopUp, *, held_by: str | None = None) -> None: ...
    async def stale(self, *, before: datetime, limit: int = 100) -> list[TopUp]: ...
    # A worker is silent when its last heartbeat is older than `since` (killed mid-attempt, say).
    async def holder_silent(self, topup_id: str, *, since: datetime) -> bool: ...
    async def held_by_silent_workers(self, *, since: datetime, limit: int = 100) -> list[TopUp]: ...
    async def in_review(self) -> list[TopUp]: ...


class JobQueue(Protocol):
    async def enqueue(self, kind: str, payload: dict, *, run_after: datetime | None = None) -> None: ...
    # Due jobs, and running ones whose lease ended or whose worker's heartbeat is older than `silent_after_s`.
    async def claim(self, kinds: list[str], *, worker: str, lease_s: float, limit: int,
                    silent_after_s: float | None = None) -> list[Job]: ...
    async def done(self, job_id: int) -> None: ...
    async def retry(self, job_id: int, *, run_after: datetime, error: str, refund_attempt: bool = False) -> None: ...
    async def dead(self, job_id: int, *, error: str) -> None: ...


class NotificationRepository(Protocol):
    async def add(self, *, at: datetime, channel: str, event: str, recipient: str, payment_id: str | None,
                  topup_id: str | None, message: str, status: str, error: str | None,
                  provider_id: str | None = None) -> None: ...
    async def get(self, notification_id: int) -> SentNotice | None: ...
    # (masked recipient, text), one per message of `event` for a payment already told for good: sent, or
    # skipped (SMS off), or refused by SMS (a job retry must not tell them again).
    async def told(self, payment_id: str, event: str) -> list[tuple[str, str]]: ...
    # SMS delivery reports (core/notify/delivery.py): the row AT's messageId names, and what became of it.
    async def by_provider_id(self, provider_id: str) -> SentNotice | None: ...
    async def set_delivery(self, notification_id: int, *, status: str, error: str | None,
                           delivered_at: datetime | None) -> None: ...
    # The landlord's alerts (core/audit/alerts.py): decided and recorded one worker at a time.
    async def lock_alerts(self) -> None: ...  # held until the transaction ends
    async def last_alert_at(self, event: str) -> datetime | None: ...  # the last one not `failed`
    async def start_alert(self, *, at: datetime, event: str, recipient: str, message: str) -> int: ...
    async def finish_alert(self, alert_id: int, *, channel: str, status: str, error: str | None,
                           provider_id: str | None = None) -> None: ...


class AuditLog(Protocol):
    async def record(self, *, at: datetime, actor: str, action: str, target: str | None, reason: str | None,
                     details: dict | None = None) -> None: ...


class UsageRepository(Protocol):
    """Readings, daily roll-ups, alert settings and the shared Tuya call budget (issue 15)."""

    async def add_reading(self, reading: Reading) -> None: ...
    async def readings(self, meter_id: str, *, since: datetime | None = None,
                       until: datetime | None = None) -> list[Reading]: ...
    async def prune_readings(self, meter_id: str, *, before: datetime) -> int: ...
    async def meters_with_readings_before(self, before: datetime) -> list[str]: ...
    async def daily(self, meter_id: str, *, since: date | None = None, until: date | None = None) -> list[DailyUsage]: ...
    async def save_days(self, rows: list[DailyUsage]) -> None: ...
    async def meter(self, meter_id: str) -> MeterUsage: ...
    async def save_meter(self, usage: MeterUsage) -> None: ...
    async def due_meters(self, now: datetime, *, limit: int, first_after: datetime | None = None) -> list[str]: ...
    async def topup_in_flight(self, meter_id: str) -> bool: ...
    async def tenants_of(self, meter_id: str) -> list[str]: ...
    async def alert(self, tenant_id: str, meter_id: str) -> TenantAlert: ...
    async def save_alert(self, alert: TenantAlert) -> None: ...
    async def take_calls(self, name: str, *, want: int, per_minute: int, now: datetime) -> int: ...
    async def claim_run(self, name: str, *, now: datetime, next_run_at: datetime) -> bool: ...


class UnitOfWork(Protocol):
    """One transaction. `async with uow:` opens it; it rolls back unless `commit()` was called.

    It may be entered again after it closed (a new transaction each time). So a use-case function takes
    an instance (`uow: UnitOfWork`), while a long-lived object that runs many use cases (TopUpEngine,
    DialogueDeps) holds a factory (`uow: Callable[[], UnitOfWork]`)."""

    meters: MeterRepository
    tenants: TenantRepository
    payments: PaymentRepository
    callbacks: CallbackRepository
    topups: TopUpRepository
    jobs: JobQueue
    notifications: NotificationRepository
    audit: AuditLog
    usage: UsageRepository

    # True where the database runs one write transaction at a time (SQLite, BEGIN IMMEDIATE): a write
    # committed on its own is then ordered against every transaction, which some paths use to skip theirs.
    single_writer: bool

    async def __aenter__(self) -> UnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def commit(self) -> None: ...
    def autocommit(self) -> UnitOfWork:
        """This unit of work, whose next `async with` opens no transaction: each statement commits on its
        own when it returns, and nothing is rolled back. For work whose only write is one statement: it
        saves the BEGIN and COMMIT round trips."""
        ...
    async def keep_callback(self, *, body: str, source: str | None, received_at: datetime, outcome: str = "received",
                            checkout_request_id: str | None = None) -> int:
        """Store a callback's raw body on its own, committed when this returns (call it with the unit of
        work closed). Concurrent callers share one commit (the inbox's group commit)."""
        ...


# --- meters and messages ----------------------------------------------------------------------

@dataclass(frozen=True)
class DpReport:
    """One data point as the cloud last heard it from the device: a cached value and when it came."""

    value: object  # raw DP value, as in `status`
    reported_at: datetime  # timezone-aware UTC, on this server's clock


class MeterGateway(Protocol):
    """The Tuya cloud, in raw DP values. Raises UpstreamError: `transient` False means the cloud
    refused the command (it was not applied); any other failure after sending may have been applied.
    `status` is the cloud's cache: each DP is as the device last reported it, which for a slow meter
    can be minutes old; `reports` says when each DP was reported."""

    async def device_info(self, device_id: str) -> dict: ...
    async def specifications(self, device_id: str) -> list: ...  # list[core.meters.profiles.DpSpec]
    async def status(self, device_id: str) -> dict: ...  # DP code -> raw value
    async def reports(self, device_id: str, codes: list[str]) -> dict[str, DpReport]: ...  # code -> report
    async def send_commands(self, device_id: str, commands: list[dict]) -> None: ...


class SmsAccepted(Protocol):
    """What an SMS gateway answers for an accepted message: the id its delivery reports will name."""

    @property
    def message_id(self) -> str: ...


class SmsSender(Protocol):
    """Raises UpstreamError (transient or not) when the message was not accepted. Answers the accepted
    message's id when the gateway gives one (Africa's Talking does), else None."""

    async def send(self, phone: str, message: str) -> SmsAccepted | None: ...


class MeterBalanceReader(Protocol):
    """A live read of a meter's money balance (KES) for a tenant who asks. None when it cannot be read
    now; the dialogue bounds the wait per channel (core.dialogue.service.ChannelRules) and falls back to the
    last known value."""

    async def read_balance(self, meter: Meter) -> Decimal | None: ...


class Blocked(UpstreamError):
    """Telegram will not deliver to this chat: the user blocked the bot (403 "Forbidden: bot was blocked
    by the user"), deleted their account, or the chat is gone. Retrying cannot help; use SMS instead."""

    code = "telegram_blocked"


class TelegramSender(Protocol):
    """Sends a plain-text message to a Telegram chat. Raises Blocked when the chat cannot be reached,
    UpstreamError otherwise (transient: try again later; not transient: Telegram refused the message)."""

    async def send(self, chat_id: int, text: str, *, buy_button: bool = False) -> object: ...


class OutsideWindow(UpstreamError):
    """WhatsApp will not take a free-form message: the customer has not written in the last 24 hours
    (Cloud API error 131047). Only an approved template may be sent."""

    code = "whatsapp_outside_window"


class WhatsAppSender(Protocol):
    """Sends to a WhatsApp user (wa_id, 2547XXXXXXXX) through the Cloud API; answers Meta's message id.
    Raises OutsideWindow, or UpstreamError (transient: try again later; not transient: refused)."""

    async def send_text(self, wa_id: str, text: str) -> str: ...

    async def send_template(self, wa_id: str, name: str, language: str, parameters: list[str]) -> str: ...


# --- conversations (core.dialogue) --------------------------------------------------------------


class CallerLookup(Protocol):
    """Who is calling, read on every input of every conversation (core.dialogue.runner)."""

    async def lookup(self, phone: str) -> tuple[Tenant | None, list[Meter]]:
        """The tenant whose phone this is (None: not a tenant) and the meters linked to them, by number."""
        ...


class PaymentHistory(Protocol):
    """A phone's latest payments, newest first."""

    async def recent(self, phone: str, limit: int) -> list[PaymentLine]: ...


class UssdSessionStore(Protocol):
    async def get(self, session_id: str) -> UssdSession | None: ...

    async def open(self, session_id: str, *, phone: str, since: datetime) -> tuple[UssdSession | None, int]:
        """What a hop reads first, in one go: the session, or None and how many sessions `phone` opened
        since `since` (for the cap on new sessions; 0 when the session exists)."""
        ...

    async def save(self, record: UssdSession, *, expected_hops: int | None) -> bool:
        """Insert (expected_hops None) or update if still at `expected_hops`; False if another hop won."""
        ...

    async def record_end(self, session_id: str, *, status: str, report: dict, at: datetime) -> bool: ...


class TelegramChatStore(Protocol):
    async def get(self, chat_id: int) -> TelegramChat | None: ...

    async def save(self, chat_id: int, *, user_id: int, state: dict, payment_id: str | None,
                   expected_version: int, now: datetime) -> bool:
        """Store the next state at `expected_version + 1` (0: first row); False if another update won."""
        ...

    async def set_message(self, chat_id: int, *, version: int, message_id: int) -> None: ...


class WhatsAppChatStore(Protocol):
    async def get(self, wa_id: str) -> WhatsAppChat | None: ...

    async def claim_message(self, message_id: str, *, wa_id: str, at: datetime) -> bool:
        """Note an incoming message (and open the 24-hour window); False if it was seen before (Meta
        retries deliveries), so that each message is handled once."""
        ...

    async def recent_messages(self, wa_id: str, *, since: datetime) -> int:
        """How many messages this number sent since then (rate limiting, shared by every replica)."""
        ...

    async def save(self, wa_id: str, *, state: dict, payment_id: str | None, expected_version: int,
                   now: datetime) -> bool:
        """Store the next state at `expected_version + 1` (0: first row); False if another message won."""
        ...

    async def record_status(self, *, message_id: str, wa_id: str, status: str, error: str | None,
                            at: datetime) -> None: ...
class TelegramUpdateLog(Protocol):
    """Telegram's update_ids already taken, shared by every replica."""

    async def first_time(self, update_id: int, *, at: datetime) -> bool:
        """Record `update_id`; False when it was recorded before (a retry or a re-delivered backlog)."""
        ...

    async def prune(self, *, before: datetime) -> int: ...


class TelegramAccounts(Protocol):
    async def find(self, user_id: int) -> TelegramAccount | None: ...

    async def link(self, *, user_id: int, chat_id: int, phone: str, name: str, language: str,
                   now: datetime) -> TelegramAccount: ...


# --- dashboard users (core.admin.auth) ----------------------------------------------------------


class AdminUserStore(Protocol):
    async def add(self, user: AdminUser, *, actor: str) -> AdminUser: ...  # Conflict when the name is taken
    async def get(self, username: str) -> AdminUser | None: ...
    async def touch_login(self, username: str, at: datetime) -> None: ...
    # Sets `values`, ends the user's sessions when asked, audits `action`; False when no such user.
    async def change(self, username: str, values: dict, *, end_sessions: bool, actor: str, action: str,
                     at: datetime) -> bool: ...


class LoginAttempts(Protocol):
    async def record(self, *, at: datetime, username: str, address: str, success: bool) -> int: ...  # its id
    async def forget(self, attempt_id: int) -> None: ...
    # Failures since `since` and the key's last success; the key is the username, the address, or both.
    async def failures(self, *, since: datetime, username: str | None = None, address: str | None = None) -> int: ...
