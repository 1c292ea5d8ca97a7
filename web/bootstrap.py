"""The composition root: `build_container(settings)` is the one place adapters are constructed — the
database engine, the HTTP client, the Daraja/Tuya/SMS/Telegram gateways, the storage adapters, the top-up
engine, the channels' dependencies, the metrics and the worker. The app, the worker, every CLI command,
the demo and the dashboard receive the `Container` it returns; nothing builds its own."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Callable, Mapping

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from bot.conversation import BotDeps, Conversation
from bot.runtime import TelegramBot, build_application
from core.admin.operator import read_balance
from core.dialogue.service import DialogueDeps
from core.jobs.kinds import JobKind, Notify, PushStk, RunTopUp, VerifyPayment, handler_table
from core.jobs.worker import Worker, WorkerConfig
from core.meters.model import Meter
from core.meters.profiles import BUILTIN_PROFILES, MeterProfile, load_profiles
from core.notify.service import notify
from core.payments.reconcile import reconcile_payments, verify_payment
from core.payments.model import Channel
from core.payments.service import PaymentLimits, push_payment
from core.ports import Clock, MeterBalanceReader, MeterGateway, PaymentGateway, SmsSender, TelegramSender, UnitOfWork
from core.shared.clock import SystemClock
from core.topups.service import TopUpEngine, TopUpPolicy, requeue_stale_topups
from gateways.daraja import DarajaGateway, daraja_http_client
from gateways.sms import AfricasTalkingSms
from gateways.telegram import TelegramBotApi
from gateways.tuya import TuyaMeterGateway
from gateways.tuya_pool import PooledTuyaGateway
from storage.admin_users import SqlAdminUsers, SqlLoginAttempts
from storage.db import create_engine
from storage.heartbeats import SqlHeartbeats
from storage.telegram_chats import SqlTelegramAccounts, SqlTelegramChatStore
from storage.uow import SqlUnitOfWork
from storage.ussd_sessions import SqlPaymentHistory, SqlUssdSessionStore
from ussd.hop import UssdConfig, UssdDeps
from ussd.routes import UssdMetrics
from web.metrics import Metrics
from web.settings import Settings

log = logging.getLogger("lipameter.bootstrap")

USSD_SESSIONS_KEPT = timedelta(days=7)  # a USSD session lasts minutes; a week of them answers support questions


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
    worker: Worker

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
        _, reading = await read_balance(meter.number, uow=self.uow(), meters=self.meters, profiles=self.profiles,
                                        clock=self.clock)
        return reading.money_balance


def build_container(settings: Settings, *, clock: Clock | None = None, worker_id: str | None = None,
                    ussd_config: UssdConfig | None = None, telegram_polling: bool = False) -> Container:
    """The process's parts from its settings. The keywords are the few choices a caller (a test, `lipameter
    bot --polling`) makes beyond the settings."""
    clock = clock or SystemClock()
    metrics, engine = Metrics(), create_engine(settings.database_url)

    def uow() -> SqlUnitOfWork:
        return SqlUnitOfWork(engine)

    http = daraja_http_client(settings.daraja_timeout_s)  # idle connections expire before any server's
    profiles, limits = build_profiles(settings), PaymentLimits(settings.min_amount, settings.max_amount)
    meter_gateway = build_meter_gateway(settings)
    if meter_gateway is None:
        log.warning("Tuya is not configured (TUYA_*): completed payments wait in the top-up queue")
    balance_reader = LiveBalanceReader(uow, meter_gateway, profiles, clock) if meter_gateway else None
    topup_engine = build_topup_engine(settings, uow, meter_gateway, profiles, clock) if meter_gateway else None
    payment_gateway, sms, telegram = build_daraja(settings, http), build_sms(settings), build_telegram(settings, http)
    ussd_sessions, history = SqlUssdSessionStore(engine), SqlPaymentHistory(engine)
    ussd, bot = build_channel_deps(engine, uow=uow, limits=limits, clock=clock, history=history,
                                   ussd_sessions=ussd_sessions, balance_reader=balance_reader, metrics=metrics,
                                   ussd_config=ussd_config, paybill=settings.paybill_number)
    worker = build_worker(settings, uow=uow, clock=clock, payment_gateway=payment_gateway, sms=sms,
                          telegram=telegram, topup_engine=topup_engine, ussd_sessions=ussd_sessions,
                          heartbeats=SqlHeartbeats(engine), worker_id=worker_id)
    return Container(
        settings=settings, clock=clock, metrics=metrics, profiles=profiles, limits=limits, engine=engine, uow=uow,
        http=http, payment_gateway=payment_gateway, meter_gateway=meter_gateway, sms=sms, telegram=telegram,
        balance_reader=balance_reader, topup_engine=topup_engine, ussd_sessions=ussd_sessions,
        payment_history=history, admin_users=SqlAdminUsers(engine), login_attempts=SqlLoginAttempts(engine),
        ussd=ussd, ussd_metrics=UssdMetrics(metrics.registry), bot=bot,
        telegram_bot=build_telegram_bot(settings, bot, polling=telegram_polling), worker=worker,
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
                       profiles: Mapping[str, MeterProfile], clock: Clock) -> TopUpEngine:
    policy = TopUpPolicy(max_attempts=settings.topup_max_attempts, confirm_deadline_s=settings.topup_confirm_deadline_s,
                         poll_interval_s=settings.topup_poll_interval_s, schedule_s=settings.topup_backoff,
                         attempt_lease_s=settings.topup_attempt_lease_s,
                         # A charge can leave until the gateway's call deadline: no proof before that.
                         send_window_s=getattr(meters, "deadline_s", TopUpPolicy.send_window_s))
    return TopUpEngine(uow=uow, meters=meters, profiles=profiles, clock=clock, policy=policy)


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
                       ussd_config: UssdConfig | None, paybill: str = "") -> tuple[UssdDeps, BotDeps]:
    """What the USSD and Telegram dialogues work with. The storage adapters are chosen here, so that
    ussd/ and bot/ depend on core only."""

    def started(channel: Channel) -> None:
        metrics.payments_started.labels(channel=channel.value).inc()

    dialogue = DialogueDeps(uow=uow, limits=limits, clock=clock, history=history, balance_reader=balance_reader,
                            on_payment_started=started, paybill=paybill)
    ussd = UssdDeps(dialogue=dialogue, sessions=ussd_sessions, **({"config": ussd_config} if ussd_config else {}))
    bot = BotDeps(dialogue=dialogue, chats=SqlTelegramChatStore(engine), accounts=SqlTelegramAccounts(engine))
    return ussd, bot


def build_telegram_bot(settings: Settings, deps: BotDeps, *, polling: bool) -> TelegramBot | None:
    """The bot, when TELEGRAM_BOT_TOKEN is set: fed by POST /telegram/webhook (registered at
    TELEGRAM_WEBHOOK_URL, else PUBLIC_BASE_URL + /telegram/webhook), or polling for `lipameter bot`.
    Built here, started by whoever runs it."""
    token = settings.telegram_bot_token.get_secret_value()
    if not token:
        return None
    secret = settings.telegram_webhook_secret.get_secret_value()
    if not secret and not polling:
        log.error("TELEGRAM_WEBHOOK_SECRET is not set: the Telegram webhook refuses every update")
    base = settings.public_base_url.rstrip("/")
    application = build_application(token, Conversation(deps), api_base=settings.telegram_api_base, polling=polling)
    return TelegramBot(application, secret=secret,
                       webhook_url=settings.telegram_webhook_url or (f"{base}/telegram/webhook" if base else ""))


def build_worker(settings: Settings, *, uow: Callable[[], UnitOfWork], clock: Clock, payment_gateway: PaymentGateway,
                 sms: SmsSender | None, telegram: TelegramSender | None, topup_engine: TopUpEngine | None,
                 ussd_sessions: SqlUssdSessionStore, heartbeats: SqlHeartbeats, worker_id: str | None) -> Worker:
    async def push_stk(job: PushStk) -> None:
        await push_payment(job.payment_id, uow=uow(), gateway=payment_gateway, clock=clock,
                           verify=settings.verify_callbacks)

    async def verify(job: VerifyPayment) -> None:
        await verify_payment(job.payment_id, uow=uow(), gateway=payment_gateway, clock=clock)

    async def send_notification(job: Notify) -> None:
        await notify(job, uow=uow(), sms=sms, clock=clock, telegram=telegram)

    async def sweep() -> None:
        await reconcile_payments(uow=uow(), gateway=payment_gateway, clock=clock,
                                 after_s=settings.reconcile_after_s, give_up_s=settings.reconcile_give_up_s)
        if topup_engine is not None:
            await requeue_stale_topups(uow=uow(), clock=clock)
        await ussd_sessions.purge(before=clock.now() - USSD_SESSIONS_KEPT)

    handlers: dict[JobKind, Callable] = {JobKind.PUSH_STK: push_stk, JobKind.VERIFY_PAYMENT: verify,
                                         JobKind.NOTIFY: send_notification}
    _warn_if_lease_short(settings)
    if topup_engine is not None:

        async def topup(job: RunTopUp) -> None:
            await topup_engine.run(job.topup_id)

        handlers[JobKind.TOPUP] = topup
    return Worker(uow_factory=uow, handlers=handler_table(handlers), clock=clock, sweep=sweep, heartbeat=heartbeats.beat,
                  config=WorkerConfig(worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
                                      sweep_every_s=settings.sweep_every_s, lease_s=settings.job_lease_s,
                                      concurrency=settings.worker_concurrency))


def _warn_if_lease_short(settings: Settings) -> None:
    longest_attempt = settings.topup_confirm_deadline_s + 6 * settings.tuya_timeout_s
    if settings.topup_attempt_lease_s < longest_attempt:
        log.warning("TOPUP_ATTEMPT_LEASE_S (%.0fs) is shorter than one top-up attempt can take (~%.0fs): "
                    "a second worker could take over a live attempt", settings.topup_attempt_lease_s, longest_attempt)
