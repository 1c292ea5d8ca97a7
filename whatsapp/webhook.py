"""`/whatsapp/webhook`: Meta's WhatsApp Cloud API webhook.

- `GET` is Meta's verification: `hub.mode=subscribe`, `hub.verify_token` equal to WHATSAPP_VERIFY_TOKEN
  (compared in constant time): the answer is `hub.challenge`, else 403.
- `POST` is a delivery. Its X-Hub-Signature-256 is checked on the raw body before anything is parsed
  (bad or missing: 403, nothing stored). Messages are answered here, one after the other, and the
  delivery acknowledged with 200 after; status reports are recorded. Anything we cannot read or
  answer is still acknowledged (200): Meta would only send it again. A failure of ours is answered
  with a polite line, never a 5xx.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from core.dialogue import texts
from core.ports import Clock, WhatsAppChatStore
from core.shared.errors import UpstreamError
from core.shared.inbound import MAX_JSON_DEPTH, NUL_IN_JSON, TooLarge, has_nul, json_depth, read_capped
from core.shared.phone import mask_phone
from whatsapp.conversation import Conversation
from whatsapp.inbound import SIGNATURE_HEADER, read_delivery, signed
from whatsapp.render import text_message

log = logging.getLogger("lipameter.whatsapp")

MAX_BODY = 512 * 1024  # deliveries are a few KB; anything this large is not from Meta

Send = Callable[[str, dict], Awaitable[str]]  # (wa_id, message) -> Meta's message id


@dataclass
class WhatsAppRoom:
    """What the webhook needs, built in the composition root (web/bootstrap.py)."""

    conversation: Conversation
    send: Send
    chats: WhatsAppChatStore
    clock: Clock
    app_secret: str
    verify_token: str
    phone_number_id: str


def webhook_routes(room: WhatsAppRoom | None) -> list[Route]:
    """`GET` and `POST /whatsapp/webhook` bound to the process's room (None: WhatsApp is not configured, 404)."""

    async def get(request: Request) -> Response:
        return await verify(request, room)

    async def post(request: Request) -> Response:
        return await deliver(request, room)

    return [Route("/whatsapp/webhook", get, methods=["GET"]), Route("/whatsapp/webhook", post, methods=["POST"])]


async def verify(request: Request, room: WhatsAppRoom | None) -> Response:
    if room is None:
        return PlainTextResponse("WhatsApp is not configured", status_code=404)
    params = request.query_params
    given = params.get("hub.verify_token", "")
    if (params.get("hub.mode") != "subscribe" or not room.verify_token
            or not hmac.compare_digest(given.encode(), room.verify_token.encode())):
        return PlainTextResponse("forbidden", status_code=403)
    return PlainTextResponse(params.get("hub.challenge", "")[:256])


async def deliver(request: Request, room: WhatsAppRoom | None) -> Response:
    if room is None:
        return PlainTextResponse("WhatsApp is not configured", status_code=404)
    try:
        body = await read_capped(request.stream(), MAX_BODY, declared=request.headers.get("content-length"))
    except TooLarge:
        return PlainTextResponse("request body too large", status_code=413)
    if not signed(body, request.headers.get(SIGNATURE_HEADER, ""), room.app_secret):
        return PlainTextResponse("forbidden", status_code=403)
    try:
        # Meta never sends NUL or deep nesting; the parser would recurse until it failed.
        malformed = has_nul(body, NUL_IN_JSON) or json_depth(body) > MAX_JSON_DEPTH
        data = None if malformed else json.loads(body)
    except ValueError:
        data = None
    messages, statuses = read_delivery(data, phone_number_id=room.phone_number_id)
    if data is None:
        log.warning("whatsapp webhook: ignored a malformed delivery (%d bytes)", len(body))
    for status in statuses:
        await _record(room, status)
    for incoming in messages:
        await _answer(room, incoming)
    return Response(status_code=200)


async def _record(room: WhatsAppRoom, status) -> None:
    if status.status == "failed":
        log.warning("whatsapp message %s to %s failed: %s", status.message_id, mask_phone(status.wa_id), status.error)
    try:
        await room.chats.record_status(message_id=status.message_id, wa_id=status.wa_id, status=status.status,
                                       error=status.error, at=room.clock.now())
    except Exception:  # a report lost is not worth Meta's retry of the whole delivery
        log.exception("whatsapp status %s not recorded", status.message_id)


async def _answer(room: WhatsAppRoom, incoming) -> None:
    try:
        replies = await room.conversation.handle(incoming)
    except Exception:  # the user gets a polite line; we get the traceback
        log.exception("whatsapp message %s failed", incoming.message_id)
        replies = [text_message(texts.BILINGUAL_TROUBLE)]
    for reply in replies:
        try:
            await room.send(incoming.wa_id, reply)
        except UpstreamError as error:  # the user can type again; the state is saved
            log.warning("whatsapp reply to %s not sent: %s", mask_phone(incoming.wa_id), error.message)
            return

