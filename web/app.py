"""`create_app(settings)`: the one composition root. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from bot.webhook import routes as telegram_routes
from whatsapp.webhook import routes as whatsapp_routes
from core.dialogue.service import DialogueDeps
from ussd.hop import UssdDeps
from ussd.routes import ussd_routes
from starlette.middleware import Middleware

from web import mpesa_api
from web.http import RefuseNul, SourceAllowlist
from web.settings import _split
from web.openapi import openapi_document
from web.admin.routes import admin_routes
from web.services import Services, build_services, build_worker
from web.settings import Settings

log = logging.getLogger("lipameter.app")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        async with request.app.state.services.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as error:  # the probe reports, it does not crash
        log.warning("readiness check failed: %s", type(error).__name__)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    settings = request.app.state.services.settings
    return JSONResponse(openapi_document(min_amount=settings.min_amount, max_amount=settings.max_amount))


def dialogue_deps(services: Services) -> DialogueDeps:
    """What every channel's dialogue shares; storage adapters are chosen here, so that ussd/ and bot/
    depend on core only."""
    from storage.ussd_sessions import SqlPaymentHistory

    return DialogueDeps(
        uow=services.uow, limits=services.limits, clock=services.clock, history=SqlPaymentHistory(services.engine),
        # The live meter read arrives with the meter gateway; until then, last known balances only.
        balance_reader=getattr(services, "meter_balance_reader", None),
        on_payment_started=lambda channel: services.metrics.payments_started.labels(channel=channel.value).inc(),
    )


def ussd_deps(services: Services) -> UssdDeps:
    """USSD's collaborators: the shared dialogue deps and its session store."""
    from storage.ussd_sessions import SqlUssdSessionStore

    return UssdDeps(dialogue=dialogue_deps(services), sessions=SqlUssdSessionStore(services.engine))


def telegram_deps(services: Services):
    """The Telegram bot's collaborators: the shared dialogue deps, its chats and its accounts."""
    from bot.conversation import BotDeps
    from storage.telegram_chats import SqlTelegramAccounts, SqlTelegramChatStore

    return BotDeps(dialogue=dialogue_deps(services), chats=SqlTelegramChatStore(services.engine),
                   accounts=SqlTelegramAccounts(services.engine))


def whatsapp_deps(services: Services):
    """The WhatsApp room's collaborators: the shared dialogue deps and its chats."""
    from storage.whatsapp_chats import SqlWhatsAppChatStore
    from whatsapp.conversation import WhatsAppDeps

    return WhatsAppDeps(dialogue=dialogue_deps(services), chats=SqlWhatsAppChatStore(services.engine))


def start_whatsapp(settings: Settings, services: Services):
    """The WhatsApp room, when WHATSAPP_* are all set, fed by /whatsapp/webhook (configured in Meta's app
    dashboard with WHATSAPP_VERIFY_TOKEN; nothing to register from here)."""
    if services.whatsapp is None:
        return None
    from whatsapp.conversation import Conversation
    from whatsapp.webhook import WhatsAppRoom

    deps = whatsapp_deps(services)
    gateway = services.whatsapp
    return WhatsAppRoom(conversation=Conversation(deps), send=gateway.send, chats=deps.chats, clock=services.clock,
                        app_secret=settings.whatsapp_app_secret.get_secret_value(),
                        verify_token=settings.whatsapp_verify_token.get_secret_value(),
                        phone_number_id=settings.whatsapp_phone_number_id)


async def start_telegram(settings: Settings, services: Services):
    """The bot, when TELEGRAM_BOT_TOKEN is set, fed by POST /telegram/webhook. The webhook is registered
    at TELEGRAM_WEBHOOK_URL, else PUBLIC_BASE_URL + /telegram/webhook."""
    token = settings.telegram_bot_token.get_secret_value()
    if not token:
        return None
    from bot.conversation import Conversation
    from bot.runtime import TelegramBot, build_application

    secret = settings.telegram_webhook_secret.get_secret_value()
    if not secret:
        log.error("TELEGRAM_WEBHOOK_SECRET is not set: the Telegram webhook refuses every update")
    base = settings.public_base_url.rstrip("/")
    application = build_application(token, Conversation(telegram_deps(services)), api_base=settings.telegram_api_base)
    bot = TelegramBot(application, secret=secret,
                      webhook_url=settings.telegram_webhook_url or (f"{base}/telegram/webhook" if base else ""))
    await bot.start()
    return bot


def create_app(
    settings: Settings,
    *,
    run_worker: bool = True,
    extra_routes: list[BaseRoute] | None = None,
    services: Services | None = None,
) -> Starlette:
    """Build the app. `extra_routes` lets `demo` mount the sandbox in the same process."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.services = services or build_services(settings)
        stop = asyncio.Event()
        worker_task = None
        if run_worker:
            worker_task = asyncio.create_task(build_worker(app.state.services).run(stop), name="worker")
        app.state.telegram = None
        app.state.whatsapp = start_whatsapp(settings, app.state.services)
        try:
            app.state.telegram = await start_telegram(settings, app.state.services)
            yield
        finally:
            if app.state.telegram is not None:
                await app.state.telegram.stop()
            stop.set()
            if worker_task is not None:
                await worker_task
            await app.state.services.aclose()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        *mpesa_api.routes,
        *ussd_routes(ussd_deps, registry_of=lambda services: services.metrics.registry),
        *admin_routes(settings),  # /admin (the dashboard) and /static
        *telegram_routes,  # POST /telegram/webhook
        *whatsapp_routes,  # GET and POST /whatsapp/webhook
        *(extra_routes or []),
    ]
    ussd_guard = Middleware(SourceAllowlist, prefix="/ussd", allowed=_split(settings.ussd_allowed_ips),
                            trusted_proxies=settings.trusted_proxy_list)
    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(RefuseNul), ussd_guard])


__all__ = ["create_app", "Mount"]
