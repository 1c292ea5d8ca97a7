"""The composition root: `build_container(settings)` is the one place adapters are constructed — the
database engine, the HTTP client, the Daraja/Tuya/SMS/Telegram gateways, the storage adapters, the top-up
engine, the channels' dependencies, the metrics and the worker. The app, the worker, every CLI command,
the demo and the dashboard receive the `Container` it returns; nothing builds its own."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from bot.conversation import BotDeps, Conversation
from bot.runtime import TelegramBot, build_application
from core.admin.auth import KEEP_LOGIN_ATTEMPTS
from core.admin.operator import read_balance
from core.dialogue.service import DialogueDeps
from core.jobs.kinds import (
    Alert,
    JobKind,
    Notify,
    PushStk,
    RunTopUp,
    SampleReadings,
    VerifyPayment,
    enqueue,
    handler_table,
)
from core.jobs.worker import Worker, WorkerConfig
from core.meters.model import Meter
from core.meters.profiles import BUILTIN_PROFILES, MeterProfile, load_profiles
from core.notify.service import WhatsAppReceipts, notify
from core.payments.model import Channel
from core.payments.reconcile import reconcile_payments, verify_payment
from core.payments.service import PaymentLimits, apply_received_callbacks, push_payment
from core.ports import (
    Clock,
    MeterBalanceReader,
    MeterGateway,
    PaymentGateway,
    SmsSender,
    TelegramSender,
    UnitOfWork,
    WhatsAppChatStore,
)
from core.shared.clock import SystemClock
from core.topups.service import TopUpEngine, TopUpPolicy, requeue_stale_topups
from core.usage import service as usage
from core.usage.alerts import BuyInfo, check_alerts, parse_quiet_hours, send_alert
from core.usage.model import ReadingSource
from gateways.daraja import DarajaGateway, daraja_http_client
from gateways.sms import AfricasTalkingSms
from gateways.telegram import TelegramBotApi
from gateways.tuya import TuyaMeterGateway
from gateways.tuya_pool import PooledTuyaGateway
from gateways.whatsapp import WhatsAppCloudApi
from storage.admin_users import SqlAdminUsers, SqlLoginAttempts
from storage.callers import SqlCallerLookup
from storage.db import create_engine
from storage.heartbeats import Held, SqlHeartbeats
from storage.inbox import GroupCommitInbox
from storage.telegram_chats import SqlTelegramAccounts, SqlTelegramChatStore, SqlTelegramUpdates
from storage.uow import SqlUnitOfWork
from storage.ussd_sessions import SqlPaymentHistory, SqlUssdSessionStore
from storage.whatsapp_chats import SqlWhatsAppChatStore
from ussd.hop import UssdConfig, UssdDeps
from ussd.routes import UssdMetrics
from web.audit_watch import AuditWatch
from web.metrics import Metrics
from web.settings import Settings
from whatsapp.conversation import Conversation as WhatsAppConversation
from whatsapp.conversation import WhatsAppDeps
from whatsapp.webhook import WhatsAppRoom

log = logging.getLogger("lipameter.bootstrap")

TELEGRAM_UPDATES_KEPT = timedelta(days=2)  # Telegram keeps an undelivered update 24 h; after that no retry comes
USSD_SESSIONS_KEPT = timedelta(days=7)  # a USSD session lasts minutes; a week of them answers support questions
USSD_UNPAID_KEPT = timedelta(days=1)
WHATSAPP_IDS_KEPT = timedelta(days=3)


@dataclass(frozen=True)
class Container:
    """Everything one process uses, built once. Optional parts are None when their settings are not set."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    profiles: Mapping[str, MeterProfile]
    limits: PaymentLimits
    engine: AsyncEngine
    uow: Callable[[], UnitOfWork]  # a fresh unit of work per call
    http: httpx.AsyncClient  # Daraja's and the Telegram sender's connection pool
    payment_gateway: PaymentGateway
    meter_gateway: MeterGateway | None  # None: TUYA_* not set, paid top-ups wait in the queue
    sms: SmsSender | None  # None: AT_* not set, receipts are recorded, not sent
    telegram: TelegramSender | None  # receipts for payments started in Telegram
    balance_reader: MeterBalanceReader | None  # live balances for the channels (needs Tuya)
    topup_engine: TopUpEngine | None  # needs Tuya
    ussd_sessions: SqlUssdSessionStore
    payment_history: SqlPaymentHistory
    admin_users: SqlAdminUsers
    login_attempts: SqlLoginAttempts
    ussd: UssdDeps
    ussd_metrics: UssdMetrics
    bot: BotDeps
    telegram_bot: TelegramBot | None  # None: TELEGRAM_BOT_TOKEN not set
    whatsapp: WhatsAppCloudApi | None  # None: WHATSAPP_* not set
    whatsapp_room: WhatsAppRoom | None  # what /whatsapp/webhook answers with
    worker: Worker
    audit_watch: AuditWatch  # the periodic audit: metrics and the landlord's alert
    whatsapp_chats: WhatsAppChatStore | None = None  # when WhatsApp is on: an opted-out SMS may go there

    async def aclose(self) -> None:
        await self.http.aclose()
        if isinstance(self.meter_gateway, TuyaMeterGateway):
            self.meter_gateway.close()
        await self.engine.dispose()


def container_of(request: Request) -> Container:
    """The container `create_app` bound to the app (for routes declared outside create_app)."""
    return request.app.state.container


@dataclass(frozen=True)
class LiveBalanceReader:
    """core.ports.MeterBalanceReader over the meter gateway; a read also refreshes the last known value."""

    uow: Callable[[], UnitOfWork]
    meters: MeterGateway
    profiles: Mapping[str, MeterProfile]
    clock: Clock

    async def read_balance(self, meter: Meter) -> Decimal | None:
        meter, reading = await read_balance(meter.number, uow=self.uow(), meters=self.meters,
                                            profiles=self.profiles, clock=self.clock)
        profile = self.profiles.get(meter.profile)
        if profile is not None:  # kept as a reading too: usage and days left learn from it
            await usage.record(self.uow, usage.reading_from(meter, profile, reading, at=meter.last_balance_at,
                                                            source=ReadingSource.LIVE))
        return reading.money_balance


def build_container(settings: Settings, *, clock: Clock | None = None, worker_id: str | None = None,
                    ussd_config: UssdConfig | None = None, telegram_polling: bool = False) -> Container:
    """The process's parts from its settings. The keywords are the few choices a caller (a test, `lipameter
    bot --polling`) makes beyond the settings."""
    clock = clock or SystemClock()
    metrics, engine = Metrics(), create_engine(settings.database_url)
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"

    inbox = GroupCommitInbox(engine)  # one per process: concurrent callbacks share a commit

    def uow() -> SqlUnitOfWork:
        return SqlUnitOfWork(engine, inbox)

    http = daraja_http_client(settings.daraja_timeout_s)  # idle connections expire before any server's
    profiles, limits = build_profiles(settings), PaymentLimits(settings.min_amount, settings.max_amount)
    meter_gateway = build_meter_gateway(settings)
    if meter_gateway is None:
        log.warning("Tuya is not configured (TUYA_*): completed payments wait in the top-up queue")
    balance_reader = LiveBalanceReader(uow, meter_gateway, profiles, clock) if meter_gateway else None
    topup_engine = build_topup_engine(settings, uow, meter_gateway, profiles, clock, holder=worker_id) \
        if meter_gateway else None
    payment_gateway, sms, telegram = build_daraja(settings, http), build_sms(settings), build_telegram(settings, http)
    ussd_sessions, history = SqlUssdSessionStore(engine), SqlPaymentHistory(engine)
    login_attempts = SqlLoginAttempts(engine)
    dialogue, ussd, bot = build_channel_deps(engine, uow=uow, limits=limits, clock=clock, history=history,
                                             ussd_sessions=ussd_sessions, balance_reader=balance_reader,
                                             metrics=metrics, ussd_config=ussd_config,
                                             paybill=settings.paybill_number, profiles=profiles)
    whatsapp, whatsapp_chats = build_whatsapp(settings, http), SqlWhatsAppChatStore(engine)
    telegram_updates = SqlTelegramUpdates(engine)
    audit_watch = AuditWatch(engine=engine, uow=uow, clock=clock, metrics=metrics, every_s=settings.audit_every_s,
                             admin_phone=settings.admin_phone_number, sms=sms, telegram=telegram)
    worker = build_worker(settings, uow=uow, clock=clock, payment_gateway=payment_gateway, sms=sms,
                          telegram=telegram, topup_engine=topup_engine, ussd_sessions=ussd_sessions,
                          login_attempts=login_attempts, heartbeats=SqlHeartbeats(engine), worker_id=worker_id,
                          whatsapp_chats=whatsapp_chats,
                          whatsapp_receipts=whatsapp_receipts(settings, whatsapp, whatsapp_chats),
                          audit_watch=audit_watch, telegram_updates=telegram_updates,
                          sampler=build_sampler(settings, uow, meter_gateway, profiles, clock))
    return Container(
        settings=settings, clock=clock, metrics=metrics, profiles=profiles, limits=limits, engine=engine, uow=uow,
        http=http, payment_gateway=payment_gateway, meter_gateway=meter_gateway, sms=sms, telegram=telegram,
        balance_reader=balance_reader, topup_engine=topup_engine, ussd_sessions=ussd_sessions,
        payment_history=history, admin_users=SqlAdminUsers(engine), login_attempts=login_attempts,
        ussd=ussd, ussd_metrics=UssdMetrics(metrics.registry), bot=bot,
        telegram_bot=build_telegram_bot(settings, bot, polling=telegram_polling, seen=telegram_updates, clock=clock),
        whatsapp=whatsapp,
        whatsapp_room=build_whatsapp_room(settings, dialogue, whatsapp, whatsapp_chats, clock), worker=worker,
        audit_watch=audit_watch, whatsapp_chats=whatsapp_chats if whatsapp is not None else None,
    )


# --- the parts, in the order build_container needs them -------------------------------------------


def build_profiles(settings: Settings) -> dict[str, MeterProfile]:
    if settings.meter_profiles_file:
        return load_profiles(settings.meter_profiles_file)
    return dict(BUILTIN_PROFILES)


def build_meter_gateway(settings: Settings) -> TuyaMeterGateway | None:
    if not settings.tuya_enabled:
        return None
    # One client per job the worker runs at once: a hanging meter holds only its own.
    return PooledTuyaGateway(settings.tuya_endpoint, settings.tuya_access_id,
                             settings.tuya_access_secret.get_secret_value(), timeout_s=settings.tuya_timeout_s,
                             clients=settings.worker_concurrency)


def build_topup_engine(settings: Settings, uow: Callable[[], UnitOfWork], meters: MeterGateway,
                       profiles: Mapping[str, MeterProfile], clock: Clock, *, holder: str | None = None) -> TopUpEngine:
    policy = TopUpPolicy(max_attempts=settings.topup_max_attempts, confirm_deadline_s=settings.topup_confirm_deadline_s,
                         poll_interval_s=settings.topup_poll_interval_s, schedule_s=settings.topup_backoff,
                         attempt_lease_s=settings.topup_attempt_lease_s,
                         holder_silent_s=settings.worker_silent_after_s,
                         # A charge can leave until the gateway's call deadline: no proof before that.
                         send_window_s=getattr(meters, "deadline_s", TopUpPolicy.send_window_s))
    return TopUpEngine(uow=uow, meters=meters, profiles=profiles, clock=clock, policy=policy, holder=holder)


def build_daraja(settings: Settings, http: httpx.AsyncClient) -> DarajaGateway:
    return DarajaGateway(
        base_url=settings.daraja_base_url,
        consumer_key=settings.daraja_consumer_key.get_secret_value(),
        consumer_secret=settings.daraja_consumer_secret.get_secret_value(),
        shortcode=settings.daraja_shortcode,
        passkey=settings.daraja_passkey.get_secret_value(),
        transaction_type=settings.daraja_transaction_type,
        party_b=settings.daraja_party_b or settings.daraja_shortcode,
        callback_url=settings.callback_url,
        client=http,
        timeout_s=settings.daraja_timeout_s,
    )


def build_sms(settings: Settings) -> AfricasTalkingSms | None:
    if not settings.sms_enabled:
        log.info("SMS is off (AT_USERNAME/AT_API_KEY not set): receipts are recorded, not sent")
        return None
    return AfricasTalkingSms(settings.at_username, settings.at_api_key.get_secret_value(),
                             sender_id=settings.at_sender_id or None, api_base=settings.at_api_base or None)


def build_telegram(settings: Settings, http: httpx.AsyncClient) -> TelegramBotApi | None:
    token = settings.telegram_bot_token.get_secret_value()
    return TelegramBotApi(token, api_base=settings.telegram_api_base, client=http) if token else None


def build_channel_deps(engine: AsyncEngine, *, uow: Callable[[], UnitOfWork], limits: PaymentLimits, clock: Clock,
                       history: SqlPaymentHistory, ussd_sessions: SqlUssdSessionStore,
                       balance_reader: MeterBalanceReader | None, metrics: Metrics,
                       ussd_config: UssdConfig | None, paybill: str = "",
                       profiles: Mapping[str, MeterProfile] | None = None) -> tuple[DialogueDeps, UssdDeps, BotDeps]:
    """What the USSD and Telegram dialogues work with. The storage adapters are chosen here, so that
    ussd/ and bot/ depend on core only."""

    def started(channel: Channel) -> None:
        metrics.payments_started.labels(channel=channel.value).inc()

    dialogue = DialogueDeps(uow=uow, limits=limits, clock=clock, history=history, balance_reader=balance_reader,
                            on_payment_started=started, paybill=paybill, profiles=dict(profiles or {}),
                            callers=SqlCallerLookup(engine))
    ussd = UssdDeps(dialogue=dialogue, sessions=ussd_sessions, **({"config": ussd_config} if ussd_config else {}))
    bot = BotDeps(dialogue=dialogue, chats=SqlTelegramChatStore(engine), accounts=SqlTelegramAccounts(engine))
    return dialogue, ussd, bot


def build_whatsapp(settings: Settings, http: httpx.AsyncClient) -> WhatsAppCloudApi | None:
    if not settings.whatsapp_enabled:
        return None
    return WhatsAppCloudApi(settings.whatsapp_token.get_secret_value(), settings.whatsapp_phone_number_id,
                            api_base=settings.whatsapp_api_base, client=http)


def whatsapp_receipts(settings: Settings, whatsapp: WhatsAppCloudApi | None,
                      chats: SqlWhatsAppChatStore) -> WhatsAppReceipts | None:
    """Receipts in WhatsApp for payments started there (None when WhatsApp is not configured)."""
    if whatsapp is None:
        return None
    name, language = settings.whatsapp_template
    return WhatsAppReceipts(sender=whatsapp, chats=chats, template=name, template_language=language)


def build_whatsapp_room(settings: Settings, dialogue: DialogueDeps, whatsapp: WhatsAppCloudApi | None,
                        chats: SqlWhatsAppChatStore, clock: Clock) -> WhatsAppRoom | None:
    """The WhatsApp room, when WHATSAPP_* are all set, fed by /whatsapp/webhook (configured in Meta's app
    dashboard with WHATSAPP_VERIFY_TOKEN; nothing to register from here)."""
    if whatsapp is None:
        return None
    deps = WhatsAppDeps(dialogue=dialogue, chats=chats)
    return WhatsAppRoom(conversation=WhatsAppConversation(deps), send=whatsapp.send, chats=chats, clock=clock,
                        app_secret=settings.whatsapp_app_secret.get_secret_value(),
                        verify_token=settings.whatsapp_verify_token.get_secret_value(),
                        phone_number_id=settings.whatsapp_phone_number_id)


def build_telegram_bot(settings: Settings, deps: BotDeps, *, polling: bool, seen: SqlTelegramUpdates | None = None,
                       clock: Clock | None = None) -> TelegramBot | None:
    """The bot, when TELEGRAM_BOT_TOKEN is set: fed by POST /telegram/webhook (registered at
    TELEGRAM_WEBHOOK_URL, else PUBLIC_BASE_URL + /telegram/webhook), or polling for `lipameter bot`.
    Built here, started by whoever runs it."""
    token = settings.telegram_bot_token.get_secret_value()
    if not token:
        return None
    secret = settings.telegram_webhook_secret.get_secret_value()
    if not secret and not polling:
        log.error("TELEGRAM_WEBHOOK_SECRET is not set: the Telegram webhook refuses every update")
    application = build_application(token, Conversation(deps), api_base=settings.telegram_api_base, polling=polling)
    return TelegramBot(application, secret=secret, webhook_url=settings.telegram_webhook_target, seen=seen,
                       clock=clock)


def build_sampler(settings: Settings, uow: Callable[[], UnitOfWork], meters: MeterGateway | None,
                  profiles: Mapping[str, MeterProfile], clock: Clock) -> usage.Sampler | None:
    """The readings job (needs Tuya); each reading is checked for low-balance alerts."""
    if meters is None:
        return None
    quiet = parse_quiet_hours(settings.alert_quiet_hours)

    async def alerts(meter: Meter, summary: usage.UsageSummary) -> None:
        await check_alerts(uow(), meter, balance=summary.balance, threshold=summary.threshold,
                           average=summary.average, now=clock.now(), quiet=quiet)

    config = usage.SamplingConfig(every_s=settings.readings_every_s, calls_per_minute=settings.tuya_calls_per_minute)
    return usage.Sampler(uow=uow, meters=meters, profiles=profiles, clock=clock, config=config, after_reading=alerts)


def buy_info(settings: Settings) -> BuyInfo:
    paybill = settings.daraja_shortcode if settings.daraja_transaction_type == "CustomerPayBillOnline" else ""
    return BuyInfo(ussd_code=settings.ussd_code, paybill=paybill)


SAMPLING_EVERY_S = 60.0  # how often one of the workers runs the readings job (it reads only the due meters)
ROLLUP_EVERY_S = 3600.0


def build_worker(settings: Settings, *, uow: Callable[[], UnitOfWork], clock: Clock, payment_gateway: PaymentGateway,
                 sms: SmsSender | None, telegram: TelegramSender | None, topup_engine: TopUpEngine | None,
                 ussd_sessions: SqlUssdSessionStore, login_attempts: SqlLoginAttempts, heartbeats: SqlHeartbeats,
                 whatsapp_chats: SqlWhatsAppChatStore, whatsapp_receipts: WhatsAppReceipts | None,
                 worker_id: str, audit_watch: AuditWatch | None = None,
                 telegram_updates: SqlTelegramUpdates | None = None,
                 sampler: usage.Sampler | None = None) -> Worker:
    async def push_stk(job: PushStk) -> None:
        await push_payment(job.payment_id, uow=uow(), gateway=payment_gateway, clock=clock,
                           verify=settings.verify_callbacks)

    async def verify(job: VerifyPayment) -> None:
        await verify_payment(job.payment_id, uow=uow(), gateway=payment_gateway, clock=clock)

    async def send_notification(job: Notify) -> None:
        await notify(job, uow=uow(), sms=sms, clock=clock, telegram=telegram, whatsapp=whatsapp_receipts)

    async def sweep() -> None:
        await reconcile_payments(uow=uow(), gateway=payment_gateway, clock=clock,
                                 after_s=settings.reconcile_after_s, give_up_s=settings.reconcile_give_up_s)
        if topup_engine is not None:
            await requeue_stale_topups(uow=uow(), clock=clock, holder_silent_s=settings.worker_silent_after_s)
        now = clock.now()
        # A week of the USSD sessions that paid is kept for support questions, a day of the rest. Login
        # attempts are kept as long as the longest throttle window needs them.
        await ussd_sessions.purge(before=now - USSD_SESSIONS_KEPT, unpaid_before=now - USSD_UNPAID_KEPT)
        await login_attempts.prune(before=now - KEEP_LOGIN_ATTEMPTS)
        # Meta stops retrying a delivery after about a day; older message ids need not be remembered.
        await whatsapp_chats.purge(before=now - WHATSAPP_IDS_KEPT)
        if telegram_updates is not None:
            await telegram_updates.prune(before=now - TELEGRAM_UPDATES_KEPT)
        if audit_watch is not None:
            try:
                await audit_watch.maybe_run()
            except Exception:  # the books are checked again next period; the sweep itself is done
                log.exception("periodic audit failed")
        await schedule_usage()

    async def schedule_usage() -> None:
        now = clock.now()
        if sampler is not None and await usage.claim_sampling_run(uow(), now=now, every_s=SAMPLING_EVERY_S):
            async with uow() as unit:
                await enqueue(unit.jobs, SampleReadings())
                await unit.commit()
        async with uow() as unit:
            due = await unit.usage.claim_run("rollup", now=now, next_run_at=now + timedelta(seconds=ROLLUP_EVERY_S))
            await unit.commit()
        if due:
            await usage.roll_up(uow, sampler.profiles if sampler else build_profiles(settings), now=now)

    async def sample(job: SampleReadings) -> None:
        if sampler is not None:
            await sampler.run()

    async def alert(job: Alert) -> None:
        await send_alert(job, uow=uow(), sms=sms, telegram=telegram, clock=clock, buy=buy_info(settings))

    handlers: dict[JobKind, Callable] = {JobKind.PUSH_STK: push_stk, JobKind.VERIFY_PAYMENT: verify,
                                         JobKind.NOTIFY: send_notification, JobKind.SAMPLE_READINGS: sample,
                                         JobKind.ALERT: alert}
    _warn_if_lease_short(settings)
    if topup_engine is not None:

        async def topup(job: RunTopUp) -> None:
            await topup_engine.run(job.topup_id)

        handlers[JobKind.TOPUP] = topup

    async def beat(worker: str, at: datetime, job_ids: list[int]) -> None:
        # Alive, and still running these: their leases (the jobs' and the top-up attempts') move on.
        attempts = topup_engine.attempts_in_progress() if topup_engine is not None else []
        await heartbeats.beat(worker, at, Held(job_ids=job_ids, job_lease_s=settings.job_lease_s, topup_ids=attempts,
                                               topup_lease_s=settings.topup_attempt_lease_s))

    async def drain(limit: int) -> int:
        return await apply_received_callbacks(uow, clock=clock, verify=settings.verify_callbacks, limit=limit)

    return Worker(uow_factory=uow, handlers=handler_table(handlers), clock=clock, sweep=sweep, heartbeat=beat,
                  drain=drain, config=WorkerConfig(worker_id=worker_id, sweep_every_s=settings.sweep_every_s,
                                      lease_s=settings.job_lease_s, concurrency=settings.worker_concurrency,
                                      heartbeat_every_s=settings.worker_heartbeat_s,
                                      silent_after_s=settings.worker_silent_after_s))


def _warn_if_lease_short(settings: Settings) -> None:
    longest_attempt = settings.topup_confirm_deadline_s + 6 * settings.tuya_timeout_s
    if settings.topup_attempt_lease_s < longest_attempt:
        log.warning("TOPUP_ATTEMPT_LEASE_S (%.0fs) is shorter than one top-up attempt can take (~%.0fs): "
                    "a second worker could take over a live attempt", settings.topup_attempt_lease_s, longest_attempt)
