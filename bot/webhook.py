"""`POST /telegram/webhook`: Telegram's updates in. The secret header is compared in constant time
(403 otherwise); a good update is queued and answered 200 at once, before any work, because Telegram
waits for our answer before it sends the chat's next update and retries what we do not acknowledge.
An update_id already taken (by this or another replica) is acknowledged and not run again."""

from __future__ import annotations

import hmac
import json
import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bot.runtime import TelegramBot
from core.shared.inbound import MAX_JSON_DEPTH, NUL_IN_JSON, TooLarge, has_nul, json_depth, read_capped

log = logging.getLogger("lipameter.bot")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 256 * 1024  # updates are a few KB; anything this large is not from Telegram


def webhook_routes(bot: TelegramBot | None) -> list[Route]:
    """`POST /telegram/webhook` bound to the process's bot (None: the bot is not configured, 404)."""

    async def endpoint(request: Request) -> Response:
        return await telegram_webhook(request, bot)

    return [Route("/telegram/webhook", endpoint, methods=["POST"])]


async def telegram_webhook(request: Request, bot: TelegramBot | None) -> Response:
    if bot is None:
        return PlainTextResponse("the Telegram bot is not configured", status_code=404)
    given = request.headers.get(SECRET_HEADER, "")
    # No configured secret refuses everything: an open webhook would let anyone speak as any user.
    if not bot.secret or not hmac.compare_digest(given.encode(), bot.secret.encode()):
        return PlainTextResponse("forbidden", status_code=403)
    try:
        body = await read_capped(request.stream(), MAX_BODY, declared=request.headers.get("content-length"))
    except TooLarge:
        return PlainTextResponse("request body too large", status_code=413)
    if not bot.ready:
        return PlainTextResponse("the bot is starting", status_code=503)  # Telegram retries later
    try:
        # Telegram never sends NUL; PostgreSQL would refuse it in text: such an update is malformed.
        # Nor nesting deeper than any update: the parser would recurse until it failed.
        malformed = has_nul(body, NUL_IN_JSON) or json_depth(body) > MAX_JSON_DEPTH
        data = None if malformed else json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and not await bot.first_time(data):
        log.info("telegram webhook: update %s seen before, acknowledged only", data.get("update_id"))
        return Response(status_code=200)
    if not isinstance(data, dict) or not bot.feed(data):
        # Acknowledged anyway: Telegram would only send the same malformed update again.
        log.warning("telegram webhook: ignored a malformed update (%d bytes)", len(body))
    return Response(status_code=200)
