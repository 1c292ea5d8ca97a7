"""`create_app(container)`: the Starlette app over a container built by web/bootstrap.py. The routes are
bound to the container's parts when the app is made; the lifespan starts the worker and the bot and, at
shutdown, closes the container."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.webhook import webhook_routes
from ussd.routes import ussd_routes
from web import c2b_api, mpesa_api, sms_api
from web.admin.routes import admin_routes
from web.bootstrap import Container
from web.http import RefuseNul, SourceAllowlist
from web.openapi import openapi_document
from web.outage import outage_handlers
from web.settings import _split
from whatsapp.webhook import webhook_routes as whatsapp_routes

log = logging.getLogger("lipameter.app")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def probe_routes(container: Container) -> list[Route]:
    """/healthz (the process is up), /readyz (and reaches its database), /metrics, /openapi.json."""

    async def readyz(request: Request) -> Response:
        try:
            async with container.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception as error:  # the probe reports, it does not crash
            log.warning("readiness check failed: %s", type(error).__name__)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def metrics(request: Request) -> Response:
        if container.audit_watch.due():  # no worker in this process has run the audit lately
            try:
                await container.audit_watch.run(alert=False)
            except Exception:  # the other metrics are still worth answering with
                log.warning("could not refresh the audit metrics", exc_info=True)
        return Response(generate_latest(container.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        limits = container.limits  # the deployment's MIN_AMOUNT..MAX_AMOUNT, stated in the schema
        return JSONResponse(openapi_document(min_amount=limits.min_amount, max_amount=limits.max_amount))

    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
            Route("/openapi.json", openapi)]


def create_app(container: Container, *, run_worker: bool = True,
               extra_routes: list[BaseRoute] | None = None) -> Starlette:
    """The app; it owns `container` from here on. `extra_routes` lets `demo` mount the sandbox in the same process."""
    settings = container.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        worker_task = asyncio.create_task(container.worker.run(stop), name="worker") if run_worker else None
        bot = container.telegram_bot
        try:
            if bot is not None:
                await bot.start()
            yield
        finally:
            if bot is not None:
                await bot.stop()
            stop.set()
            if worker_task is not None:
                await worker_task
            await container.aclose()

    # The router tries routes in order, each a regex match: what a rush hits (USSD hops, callbacks) first.
    routes: list[BaseRoute] = [
        *ussd_routes(container.ussd, container.ussd_metrics),
        *mpesa_api.routes,
        *c2b_api.routes,  # Daraja C2B: Paybill and Till payments
        *sms_api.routes,  # Africa's Talking SMS delivery reports
        *probe_routes(container),
        *admin_routes(container),  # /admin (the dashboard) and /static
        *webhook_routes(container.telegram_bot),  # POST /telegram/webhook
        *whatsapp_routes(container.whatsapp_room),  # GET and POST /whatsapp/webhook
        *(extra_routes or []),
    ]
    ussd_guard = Middleware(SourceAllowlist, prefix="/ussd", allowed=_split(settings.ussd_allowed_ips),
                            trusted_proxies=settings.trusted_proxy_list)
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(RefuseNul), ussd_guard],
                    exception_handlers=outage_handlers())
    app.state.container = container  # for the routes declared at module level (web/mpesa_api.py)
    return app
