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


# PostgreSQL's SQLSTATEs for "no server to work with right now": class 08 (connection exceptions), the
# server shutting down or starting up (57P01-57P03: "the database system is starting up" after a restart
# comes as a plain DBAPIError, not a disconnect) and too many connections (53300).
AWAY_SQLSTATES = ("57P01", "57P02", "57P03", "53300")


def is_database_away(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and (error.connection_invalidated or _away_sqlstate(error.orig)):
        return True
    return isinstance(error, DATABASE_AWAY)


def _away_sqlstate(error: BaseException | None) -> bool:
    """The driver's SQLSTATE, on its error or on the asyncpg error it wraps."""
    for candidate in (error, getattr(error, "__cause__", None)):
        state = str(getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None) or "")
        if state.startswith("08") or state in AWAY_SQLSTATES:
            return True
    return False


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
