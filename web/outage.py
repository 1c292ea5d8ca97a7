"""When the database is away (a restart, a failover, a network cut): a 503 with a retry hint, never a 500.

Nothing is acknowledged that was not stored, so a refusal loses nothing: Daraja's callbacks are settled later
by the STK query (reconcile), Telegram retries, an API client sees Retry-After. (A USSD hop answers its own
polite END in both languages: ussd/routes.py.)
"""

from __future__ import annotations

import logging

from sqlalchemy import exc as sa_exc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("lipameter.app")

RETRY_AFTER_S = 5

# Errors that mean "no database to talk to", not "our query is wrong" (those stay 500s: they are bugs).
DATABASE_AWAY: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError,
    ConnectionError, TimeoutError,
)


def is_database_away(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, DATABASE_AWAY)


async def database_away(request: Request, error: Exception) -> Response:
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, type(error).__name__)
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse({"success": False, "message": "the service is briefly unavailable; try again shortly",
                         "code": "unavailable"}, status_code=503, headers=headers)


def outage_handlers() -> dict:
    handlers: dict = dict.fromkeys(DATABASE_AWAY, database_away)
    handlers[sa_exc.DBAPIError] = _dbapi_error  # a dropped connection surfaces as the driver's own error
    return handlers


async def _dbapi_error(request: Request, error: Exception) -> Response:
    if is_database_away(error):
        return await database_away(request, error)
    raise error
