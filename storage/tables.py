"""The schema. Alembic migrations in storage/migrations are generated from and checked against this."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator):
    """Aware UTC in and out. SQLite keeps no zone, so we strip it on the way in and add it back."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store aware UTC")
        if value.tzinfo is not UTC:  # our clock's times are UTC already: no conversion to make
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect):
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite keeps text: the very text SQLAlchemy's DATETIME writes (`YYYY-MM-DD HH:MM:SS.ffffff`), made
        # by isoformat in C in one step instead of three in Python (every row of every write carries some).
        def process(value: datetime | None) -> str | None:
            naive = self.process_bind_param(value, dialect)
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def Money(): return sa.Numeric(14, 2)
def Quantity(): return sa.Numeric(18, 4)


ACTIVE_PAYMENT = "status IN ('requested', 'pending')"

meters = sa.Table(
    "meters", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("number", sa.String(12), nullable=False, unique=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("profile", sa.String(40), nullable=False),
    sa.Column("price_per_kwh", Quantity(), nullable=True),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("last_balance", Quantity(), nullable=True),
    sa.Column("last_balance_at", UTCDateTime(), nullable=True),
    sa.Column("dp_specs", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("online", sa.Boolean, nullable=True),
    sa.Column("last_energy", Quantity(), nullable=True),
    # One active meter per Tuya device: a second would have its credits land on the first's unit.
    sa.Index("uq_meters_active_device", "device_id", unique=True, postgresql_where=sa.text("active"),
             sqlite_where=sa.text("active")),
)

tenants = sa.Table(
    "tenants", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("phone", sa.String(15), nullable=False, unique=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("language", sa.String(2), nullable=False),
    sa.Column("telegram_user_id", sa.BigInteger, nullable=True, unique=True),
    sa.Column("telegram_chat_id", sa.BigInteger, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

meter_access = sa.Table(
    "meter_access", metadata,
    sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("meter_id", sa.String(36), sa.ForeignKey("meters.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

payments = sa.Table(
    "payments", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("amount", sa.Integer, nullable=False),
    sa.Column("phone", sa.String(15), nullable=False),
    sa.Column("meter_id", sa.String(36), sa.ForeignKey("meters.id"), nullable=False, index=True),
    sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("idempotency_key", sa.String(128), nullable=True, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("merchant_request_id", sa.String(64), nullable=True),
    sa.Column("checkout_request_id", sa.String(64), nullable=True, unique=True),
    sa.Column("mpesa_receipt", sa.String(32), nullable=True, unique=True),
    sa.Column("transaction_date", UTCDateTime(), nullable=True),
    sa.Column("paid_amount", Money(), nullable=True),
    sa.Column("result_code", sa.String(32), nullable=True),
    sa.Column("result_desc", sa.String(255), nullable=True),
    sa.Column("review_reason", sa.String(255), nullable=True),
    sa.Column("pushed_at", UTCDateTime(), nullable=True),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("resolved_by", sa.String(80), nullable=True),
    sa.Column("resolution", sa.String(500), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("payer_name", sa.String(120), nullable=True),  # C2B: as Daraja sends it (may be masked)
    sa.Column("payer_msisdn", sa.String(64), nullable=True),  # C2B: as Daraja sends it (masked or hashed in v2)
    # Daraja refuses a second prompt while one is open, so do we: at most one active payment a phone.
    sa.Index("uq_payments_active_phone", "phone", unique=True,
             sqlite_where=sa.text(ACTIVE_PAYMENT), postgresql_where=sa.text(ACTIVE_PAYMENT)),
    sa.Index("ix_payments_status_updated_at", "status", "updated_at"),
)

mpesa_callbacks = sa.Table(
    "mpesa_callbacks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("checkout_request_id", sa.String(64), nullable=True, index=True),
    sa.Column("payment_id", sa.String(36), nullable=True, index=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    # stk | c2b_validation | c2b_confirmation; C2B bodies are keyed on TransID (the M-Pesa receipt)
    sa.Column("kind", sa.String(16), nullable=False, server_default="stk"),
    sa.Column("trans_id", sa.String(32), nullable=True, index=True),
    sa.Column("note", sa.String(255), nullable=True),  # why a C2B body was refused or waits for a person
    sa.Index("ix_mpesa_callbacks_kind_outcome", "kind", "outcome"),
    # The inbox: callbacks kept and not applied yet, oldest first (migration 0010i).
    sa.Index("ix_mpesa_callbacks_received", "id", postgresql_where=sa.text("outcome = 'received'"),
             sqlite_where=sa.text("outcome = 'received'")),
)

topups = sa.Table(
    "topups", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("payment_id", sa.String(36), sa.ForeignKey("payments.id"), nullable=True, unique=True),
    sa.Column("meter_id", sa.String(36), sa.ForeignKey("meters.id"), nullable=False),
    sa.Column("amount", Money(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("dp_code", sa.String(40), nullable=True),
    sa.Column("raw_value", sa.BigInteger, nullable=True),
    sa.Column("counter_before", Quantity(), nullable=True),
    sa.Column("balance_before", Quantity(), nullable=True),
    sa.Column("balance_after", Quantity(), nullable=True),
    sa.Column("units_added", Quantity(), nullable=True),
    sa.Column("remainder", Money(), nullable=True),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    sa.Column("applied_at", UTCDateTime(), nullable=True),
    sa.Column("applied_by", sa.String(80), nullable=True),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("delay_notified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("request_key", sa.String(64), nullable=True, unique=True),  # a manual top-up form's one-time key
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("resolved_by", sa.String(80), nullable=True),
    sa.Column("resolution", sa.String(500), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # The worker (worker_heartbeats.worker_id) whose attempt holds this top-up; None between attempts.
    sa.Column("claimed_by", sa.String(120), nullable=True),
    sa.Index("ix_topups_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_topups_meter_id_status", "meter_id", "status"),
    # One top-up in flight per meter, across every worker: the database refuses a second `sending`.
    sa.Index("uq_topups_sending_meter", "meter_id", unique=True,
             sqlite_where=sa.text("status = 'sending'"), postgresql_where=sa.text("status = 'sending'")),
)

notifications = sa.Table(
    "notifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("channel", sa.String(16), nullable=False),  # sms | telegram | whatsapp | whatsapp_tmpl | log
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("recipient", sa.String(32), nullable=False),
    sa.Column("payment_id", sa.String(36), nullable=True, index=True),
    sa.Column("topup_id", sa.String(36), nullable=True, index=True),
    sa.Column("message", sa.String(480), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # sent | failed | skipped
    sa.Column("error", sa.String(255), nullable=True),
    # SMS only: Africa's Talking's messageId, then what its delivery report said (core/notify/delivery.py).
    sa.Column("provider_id", sa.String(64), nullable=True, index=True),
    sa.Column("delivery_status", sa.String(16), nullable=True),  # Sent | Submitted | Buffered | Success | Failed | Rejected
    sa.Column("delivery_error", sa.String(64), nullable=True),  # AT's failureReason (Failed, Rejected)
    sa.Column("delivered_at", UTCDateTime(), nullable=True),  # when the Success report came
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # queued | running | done | dead
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("run_after", UTCDateTime(), nullable=False),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("locked_by", sa.String(64), nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_jobs_status_run_after", "status", "run_after"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("actor", sa.String(80), nullable=False),
    sa.Column("action", sa.String(60), nullable=False),
    sa.Column("target", sa.String(80), nullable=True),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
)

# One row per Africa's Talking USSD session: the dialogue's state between hops, and the last hop's
# answer so that a gateway retry of the same hop is replayed, never run (and never charged) twice.
ussd_sessions = sa.Table(
    "ussd_sessions", metadata,
    sa.Column("session_id", sa.String(100), primary_key=True),
    sa.Column("phone", sa.String(15), nullable=False),
    sa.Column("service_code", sa.String(40), nullable=True),
    sa.Column("network_code", sa.String(16), nullable=True),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("last_text", sa.Text, nullable=False),
    sa.Column("last_answer", sa.String(400), nullable=False),
    sa.Column("hops", sa.Integer, nullable=False),
    sa.Column("ended", sa.Boolean, nullable=False),
    sa.Column("payment_id", sa.String(36), nullable=True),
    sa.Column("end_status", sa.String(16), nullable=True),  # Africa's Talking: Success | Incomplete | Failed
    sa.Column("end_report", sa.JSON, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False, index=True),
    sa.Index("ix_ussd_sessions_phone_created_at", "phone", "created_at"),  # the per-phone cap
)

# Dashboard users (issue 6). Passwords are scrypt hashes (core/admin/auth.py); never the password.
admin_users = sa.Table(
    "admin_users", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(80), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # admin | viewer
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_login_at", UTCDateTime(), nullable=True),
    # In every session cookie; raised to revoke them all (logout, new password, disable).
    sa.Column("session_gen", sa.Integer, nullable=False, server_default="0"),
)

# Every login attempt, so that the throttle holds across replicas (counted per username and address).
login_attempts = sa.Table(
    "login_attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("username", sa.String(80), nullable=False),
    sa.Column("address", sa.String(64), nullable=False),
    sa.Column("success", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_login_attempts_username_at", "username", "at"),
    sa.Index("ix_login_attempts_address_at", "address", "at"),
)

# One row per Telegram private chat (issue 5): the purchase dialogue's state between messages and the
# message whose inline keyboard is live, so that any replica (or a restarted one) continues the
# conversation. `version` goes up with every screen sent; buttons carry it, so a press on an older
# message is recognised as stale and never acted on.
telegram_chats = sa.Table(
    "telegram_chats", metadata,
    sa.Column("chat_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("state", sa.JSON, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("last_message_id", sa.BigInteger, nullable=True),
    sa.Column("payment_id", sa.String(36), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False, index=True),
)

# One row per worker process, written every few seconds by its loop: `lipameter doctor` (and a
# person) can tell whether anything is running the job queue.
worker_heartbeats = sa.Table(
    "worker_heartbeats", metadata,
    sa.Column("worker_id", sa.String(120), primary_key=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("seen_at", UTCDateTime(), nullable=False, index=True),
)

# WhatsApp (issue 14). One row per WhatsApp number: the dialogue's state between messages, like
# telegram_chats, and when the customer last wrote (Meta's 24-hour customer-service window).
whatsapp_chats = sa.Table(
    "whatsapp_chats", metadata,
    sa.Column("wa_id", sa.String(20), primary_key=True),
    sa.Column("state", sa.JSON, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("payment_id", sa.String(36), nullable=True),
    sa.Column("last_inbound_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False, index=True),
)

# Every incoming message id, once: Meta retries a delivery it thinks failed, and a message must be
# handled once. Also what rate limiting counts (per number, shared by every replica).
whatsapp_inbound = sa.Table(
    "whatsapp_inbound", metadata,
    sa.Column("message_id", sa.String(128), primary_key=True),
    sa.Column("wa_id", sa.String(20), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Index("ix_whatsapp_inbound_wa_id_received_at", "wa_id", "received_at"),
)

# Delivery reports for what we sent (sent, delivered, read, failed), kept for support questions.
whatsapp_statuses = sa.Table(
    "whatsapp_statuses", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(128), nullable=False, index=True),
    sa.Column("wa_id", sa.String(20), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.String(255), nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
)

telegram_updates = sa.Table(
    # Telegram's update_ids already handled: a retried or re-delivered update is acknowledged, not run
    # again, whichever replica it reaches. Pruned by the sweep after Telegram's own 24 h retention.
    "telegram_updates", metadata,
    sa.Column("update_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("seen_at", UTCDateTime(), nullable=False, index=True),
)

# --- usage and alerts (issue 15) ---------------------------------------------------------------------
# Raw balance readings of the last days; older ones are rolled up into meter_daily and pruned by the
# sweep (storage/usage.py), so the table holds about two days of readings per meter.
meter_readings = sa.Table(
    "meter_readings", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("meter_id", sa.String(36), sa.ForeignKey("meters.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("balance", Quantity(), nullable=True),  # in the meter's unit (KES or kWh)
    sa.Column("energy_total", Quantity(), nullable=True),
    sa.Column("credit", Quantity(), nullable=True),  # a top-up reading: what it added
    sa.Column("source", sa.String(8), nullable=False),  # sample | topup | live
    sa.Index("ix_meter_readings_meter_id_at", "meter_id", "at"),
)

# One row per meter and Nairobi day, for days whose raw readings are gone.
meter_daily = sa.Table(
    "meter_daily", metadata,
    sa.Column("meter_id", sa.String(36), sa.ForeignKey("meters.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("consumption", Quantity(), nullable=True),  # None: the day is not covered (offline)
    sa.Column("credits", Quantity(), nullable=False),
    sa.Column("manual_credits", Quantity(), nullable=False),
    sa.Column("first_balance", Quantity(), nullable=True),
    sa.Column("last_balance", Quantity(), nullable=True),
    sa.Column("covered_s", sa.Integer, nullable=False),
    sa.Column("readings", sa.Integer, nullable=False),
)

# Per meter: the landlord's alert threshold (None: about two days of its own use), when it is read next,
# and up to which day its readings are rolled up.
meter_usage = sa.Table(
    "meter_usage", metadata,
    sa.Column("meter_id", sa.String(36), sa.ForeignKey("meters.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("threshold", Quantity(), nullable=True),
    sa.Column("next_read_at", UTCDateTime(), nullable=True, index=True),
    sa.Column("rolled_until", sa.Date, nullable=True),  # days before it live in meter_daily
)

# Per tenant and meter: the tenant's own threshold or opt-out, and which alerts they have been sent since
# the meter was last topped up (so each is sent once).
tenant_alerts = sa.Table(
    "tenant_alerts", metadata,
    sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("meter_id", sa.String(36), sa.ForeignKey("meters.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("threshold", Quantity(), nullable=True),
    sa.Column("low_sent_at", UTCDateTime(), nullable=True),
    sa.Column("zero_sent_at", UTCDateTime(), nullable=True),
)

# Shared rate budgets (one row each: "tuya"), and the time the next sampling run is due.
call_budgets = sa.Table(
    "call_budgets", metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("tokens", sa.Numeric(14, 6), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("next_run_at", UTCDateTime(), nullable=True),
)
