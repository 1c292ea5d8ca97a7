"""The Telegram Bot API as core's TelegramSender: plain `sendMessage` over httpx, for receipts.

The worker sends receipts, and it may run in a process without the bot (`lipameter worker`), so this
is a small client of its own rather than python-telegram-bot's Application.

Bot API facts it is built around:
- every answer is `{"ok": bool, "result" | "error_code", "description", "parameters"}`;
- 403 means the chat will never take our messages ("Forbidden: bot was blocked by the user", "user is
  deactivated", "bot was kicked"), and so does 400 "chat not found": both are `Blocked`;
- 429 carries `parameters.retry_after` (seconds). Telegram allows about one message a second in one
  chat, so sends are spaced per chat (`PerChatLimiter`) and a short 429 is waited out once;
- the URL holds the token (`/bot<token>/sendMessage`): it never goes into an error message or a log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import httpx

from core.ports import Blocked
from core.shared.errors import UpstreamError
from gateways.json_http import post_json

log = logging.getLogger("lipameter.telegram")

BUY_DATA = "buy"  # the alert's Buy button; bot/conversation.py starts the purchase on it
MAX_TEXT = 4096  # Telegram refuses longer messages
MAX_WAIT_S = 5.0  # a longer 429 goes back to the job queue instead of holding a worker
_GONE = ("chat not found", "user not found", "have no rights to send", "need administrator rights")


class PerChatLimiter:
    """At most one message per `interval_s` per chat, in this process. Each caller reserves the next
    free slot before sleeping, so concurrent sends to one chat queue up instead of bursting."""

    def __init__(self, interval_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, max_chats: int = 10_000) -> None:
        self.interval_s, self._clock, self._sleep, self._max = interval_s, clock, sleep, max_chats
        self._next: dict[int, float] = {}

    async def wait(self, chat_id: int) -> None:
        now = self._clock()
        slot = max(now, self._next.get(chat_id, now))
        self._next[chat_id] = slot + self.interval_s
        if len(self._next) > self._max:  # forget chats whose slot has long passed
            self._next = {chat: at for chat, at in self._next.items() if at > now}
        if slot > now:
            await self._sleep(slot - now)


class TelegramBotApi:
    def __init__(self, token: str, *, api_base: str = "", client: httpx.AsyncClient | None = None,
                 timeout_s: float = 10.0, limiter: PerChatLimiter | None = None) -> None:
        self._url = f"{(api_base or 'https://api.telegram.org').rstrip('/')}/bot{token}"
        self._client = client
        self._timeout_s = timeout_s
        self.limiter = limiter or PerChatLimiter()

    def __repr__(self) -> str:  # the URL carries the token
        return "TelegramBotApi()"

    async def send(self, chat_id: int, text: str, *, buy_button: bool = False) -> int:
        """The sent message's id. Raises Blocked, or UpstreamError (transient or not). `buy_button`: an
        inline "Buy" button that opens the bot's purchase dialogue (a low-balance alert)."""
        payload = {"chat_id": chat_id, "text": text[:MAX_TEXT], "disable_web_page_preview": True}
        if buy_button:
            payload["reply_markup"] = {"inline_keyboard": [[{"text": "Buy / Nunua", "callback_data": BUY_DATA}]]}
        for attempt in range(2):
            await self.limiter.wait(chat_id)
            status, answer = await self._call("sendMessage", payload)
            if answer.get("ok") is True:
                return int((answer.get("result") or {}).get("message_id") or 0)
            retry_after = _retry_after(answer)
            if status == 429 and attempt == 0 and retry_after is not None and retry_after <= MAX_WAIT_S:
                await asyncio.sleep(retry_after)
                continue
            raise _error(status, answer)
        raise AssertionError("unreachable")

    async def _call(self, method: str, payload: dict) -> tuple[int, dict]:
        return await post_json(self._client, f"{self._url}/{method}", payload, service="Telegram", code="telegram",
                               timeout_s=self._timeout_s)


def _retry_after(answer: dict) -> float | None:
    parameters = answer.get("parameters")
    value = parameters.get("retry_after") if isinstance(parameters, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _error(status: int, answer: dict) -> UpstreamError:
    code = answer.get("error_code") if isinstance(answer.get("error_code"), int) else status
    description = str(answer.get("description") or f"HTTP {status}")[:200]
    if code == 403 or (code == 400 and any(gone in description.lower() for gone in _GONE)):
        return Blocked(description, code="telegram_blocked")
    if code == 429 or code >= 500:
        return UpstreamError(f"Telegram is busy: {description}", code="telegram_busy", transient=True)
    if code in (401, 404):  # a wrong token answers 401 (or 404 on some servers): an operator must fix it
        log.error("Telegram refused the bot token (%s); check TELEGRAM_BOT_TOKEN", code)
    return UpstreamError(f"Telegram refused the message: {description}", code="telegram_refused")
