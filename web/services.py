"""The composition root's parts: what the routes, the worker and the CLI share for one process."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import SystemClock
from core.payment_service import PaymentLimits, push_payment
from core.ports import Clock, PaymentGateway
from core.reconcile import reconcile_payments, verify_payment
from core.worker import Worker, WorkerConfig
from gateways.daraja import DarajaGateway
from storage.db import create_engine
from storage.uow import SqlUnitOfWork
from web.metrics import Metrics
from web.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    payment_gateway: PaymentGateway
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    http: httpx.AsyncClient | None = None

    @property
    def limits(self) -> PaymentLimits:
        return PaymentLimits(self.settings.min_amount, self.settings.max_amount)

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        await self.engine.dispose()


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
    return Services(settings=settings, engine=create_engine(settings.database_url), payment_gateway=daraja, http=http)


def build_worker(services: Services, *, worker_id: str | None = None) -> Worker:
    settings = services.settings

    async def push_stk(payload: dict) -> None:
        await push_payment(payload["payment_id"], uow=services.uow(), gateway=services.payment_gateway,
                           clock=services.clock)

    async def verify(payload: dict) -> None:
        await verify_payment(payload["payment_id"], uow=services.uow(), gateway=services.payment_gateway,
                             clock=services.clock)

    async def sweep() -> None:
        await reconcile_payments(uow=services.uow(), gateway=services.payment_gateway, clock=services.clock,
                                 after_s=settings.reconcile_after_s, give_up_s=settings.reconcile_give_up_s)

    return Worker(
        uow_factory=services.uow,
        handlers={"push_stk": push_stk, "verify_payment": verify},
        clock=services.clock,
        config=WorkerConfig(worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
                            sweep_every_s=settings.sweep_every_s),
        sweep=sweep,
    )
