"""The composition root's parts: what the routes, the worker and the CLI share for one process."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Mapping

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from core.shared.clock import SystemClock
from core.meters.profiles import BUILTIN_PROFILES, MeterProfile, load_profiles
from core.notify.service import WhatsAppReceipts, notify
from core.admin.operator import read_balance
from core.payments.service import PaymentLimits, push_payment
from core.ports import Clock, MeterGateway, PaymentGateway, SmsSender, TelegramSender
from core.payments.reconcile import reconcile_payments, verify_payment
from core.topups.service import TopUpEngine, TopUpPolicy, requeue_stale_topups
from core.jobs.worker import Worker, WorkerConfig
from gateways.daraja import DarajaGateway
from gateways.sms import AfricasTalkingSms
from gateways.telegram import TelegramBotApi
from gateways.whatsapp import WhatsAppCloudApi
from gateways.tuya import TuyaMeterGateway
from storage.db import create_engine
from storage.ussd_sessions import SqlUssdSessionStore
from storage.whatsapp_chats import SqlWhatsAppChatStore
from storage.uow import SqlUnitOfWork
from web.metrics import Metrics
from web.settings import Settings

log = logging.getLogger("lipameter.services")


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    payment_gateway: PaymentGateway
    meter_gateway: MeterGateway | None = None
    sms: SmsSender | None = None
    profiles: Mapping[str, MeterProfile] = field(default_factory=lambda: dict(BUILTIN_PROFILES))
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    http: httpx.AsyncClient | None = None
    telegram: TelegramSender | None = None  # receipts for payments started in Telegram
    whatsapp: WhatsAppCloudApi | None = None  # the WhatsApp room's replies and its receipts

    @property
    def limits(self) -> PaymentLimits:
        return PaymentLimits(self.settings.min_amount, self.settings.max_amount)

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine)

    @property
    def meter_balance_reader(self) -> "LiveBalanceReader | None":
        return LiveBalanceReader(self) if self.meter_gateway is not None else None

    def topup_engine(self) -> TopUpEngine:
        settings = self.settings
        policy = TopUpPolicy(max_attempts=settings.topup_max_attempts,
                             confirm_deadline_s=settings.topup_confirm_deadline_s,
                             poll_interval_s=settings.topup_poll_interval_s, schedule_s=settings.topup_backoff,
                             attempt_lease_s=settings.topup_attempt_lease_s)
        return TopUpEngine(uow=self.uow, meters=self.meter_gateway, profiles=self.profiles, clock=self.clock,
                           policy=policy)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        if isinstance(self.meter_gateway, TuyaMeterGateway):
            self.meter_gateway.close()
        await self.engine.dispose()


@dataclass
class LiveBalanceReader:
    """core.ports.MeterBalanceReader over the Tuya gateway; a read also refreshes the last known value."""

    services: Services

    async def read_balance(self, meter) -> Decimal | None:
        s = self.services
        _, reading = await read_balance(meter.number, uow=s.uow(), meters=s.meter_gateway, profiles=s.profiles,
                                        clock=s.clock)
        return reading.money_balance


def build_meter_gateway(settings: Settings) -> TuyaMeterGateway | None:
    if not settings.tuya_enabled:
        return None
    return TuyaMeterGateway(settings.tuya_endpoint, settings.tuya_access_id,
                            settings.tuya_access_secret.get_secret_value(), timeout_s=settings.tuya_timeout_s)


def build_profiles(settings: Settings) -> dict[str, MeterProfile]:
    if settings.meter_profiles_file:
        return load_profiles(settings.meter_profiles_file)
    return dict(BUILTIN_PROFILES)


def build_services(settings: Settings) -> Services:
    http = httpx.AsyncClient(timeout=httpx.Timeout(settings.daraja_timeout_s))
    daraja = DarajaGateway(
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
    sms = None
    if settings.sms_enabled:
        sms = AfricasTalkingSms(settings.at_username, settings.at_api_key.get_secret_value(),
                                sender_id=settings.at_sender_id or None, api_base=settings.at_api_base or None)
    else:
        log.info("SMS is off (AT_USERNAME/AT_API_KEY not set): receipts are recorded, not sent")
    meter_gateway = build_meter_gateway(settings)
    if meter_gateway is None:
        log.warning("Tuya is not configured (TUYA_*): completed payments wait in the top-up queue")
    telegram = None
    if settings.telegram_bot_token.get_secret_value():
        telegram = TelegramBotApi(settings.telegram_bot_token.get_secret_value(),
                                  api_base=settings.telegram_api_base, client=http)
    whatsapp = None
    if settings.whatsapp_enabled:
        whatsapp = WhatsAppCloudApi(settings.whatsapp_token.get_secret_value(), settings.whatsapp_phone_number_id,
                                    api_base=settings.whatsapp_api_base, client=http)
    return Services(settings=settings, engine=create_engine(settings.database_url), payment_gateway=daraja,
                    meter_gateway=meter_gateway, sms=sms, profiles=build_profiles(settings), http=http,
                    telegram=telegram, whatsapp=whatsapp)


def whatsapp_receipts(services: Services) -> WhatsAppReceipts | None:
    """Receipts in WhatsApp for payments started there (None when WhatsApp is not configured)."""
    if services.whatsapp is None:
        return None
    name, language = services.settings.whatsapp_template
    return WhatsAppReceipts(sender=services.whatsapp, chats=SqlWhatsAppChatStore(services.engine), template=name,
                            template_language=language)


def build_worker(services: Services, *, worker_id: str | None = None) -> Worker:
    settings = services.settings

    async def push_stk(payload: dict) -> None:
        await push_payment(payload["payment_id"], uow=services.uow(), gateway=services.payment_gateway,
                           clock=services.clock, verify=settings.verify_callbacks)

    async def verify(payload: dict) -> None:
        await verify_payment(payload["payment_id"], uow=services.uow(), gateway=services.payment_gateway,
                             clock=services.clock)

    async def send_notification(payload: dict) -> None:
        await notify(payload, uow=services.uow(), sms=services.sms, clock=services.clock, telegram=services.telegram,
                     whatsapp=whatsapp_receipts(services))

    async def sweep() -> None:
        await reconcile_payments(uow=services.uow(), gateway=services.payment_gateway, clock=services.clock,
                                 after_s=settings.reconcile_after_s, give_up_s=settings.reconcile_give_up_s)
        if services.meter_gateway is not None:
            await requeue_stale_topups(uow=services.uow(), clock=services.clock)
        # A USSD session lasts minutes; a week of them is kept for support questions.
        await SqlUssdSessionStore(services.engine).purge(before=services.clock.now() - timedelta(days=7))
        # Meta stops retrying a delivery after about a day; older message ids need not be remembered.
        await SqlWhatsAppChatStore(services.engine).purge(before=services.clock.now() - timedelta(days=3))

    handlers = {"push_stk": push_stk, "verify_payment": verify, "notify": send_notification}
    longest_attempt = settings.topup_confirm_deadline_s + 6 * settings.tuya_timeout_s
    if settings.topup_attempt_lease_s < longest_attempt:
        log.warning("TOPUP_ATTEMPT_LEASE_S (%.0fs) is shorter than one top-up attempt can take (~%.0fs): "
                    "a second worker could take over a live attempt", settings.topup_attempt_lease_s, longest_attempt)
    if services.meter_gateway is not None:
        engine = services.topup_engine()

        async def topup(payload: dict) -> None:
            await engine.run(payload["topup_id"])

        handlers["topup"] = topup
    return Worker(
        uow_factory=services.uow,
        handlers=handlers,
        clock=services.clock,
        config=WorkerConfig(worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
                            sweep_every_s=settings.sweep_every_s, lease_s=settings.job_lease_s),
        sweep=sweep,
    )
