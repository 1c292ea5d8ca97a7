"""The bot's lifecycle: built without an updater and fed by the webhook in a web process (`TelegramBot`),
or polling Telegram on a developer's laptop (`poll`).

The bot starts in the background: the lifespan does not wait for Telegram (the demo's Bot API sandbox is
served by this very process, which listens only after the lifespan has started), and Telegram being down
must not stop payments. Until the bot is up the webhook answers 503, which Telegram retries later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application, ContextTypes

from bot.conversation import Conversation
from bot.telegram_io import PerChatProcessor, install
from core.ports import Clock, TelegramUpdateLog

log = logging.getLogger("lipameter.bot")

ALLOWED_UPDATES = ["message", "callback_query"]
RETRY_FIRST_S, RETRY_MAX_S = 0.25, 60.0


def build_application(token: str, conversation: Conversation, *, api_base: str = "",
                      polling: bool = False) -> Application:
    builder = Application.builder().token(token).concurrent_updates(PerChatProcessor())
    if not polling:
        builder = builder.updater(None)  # updates arrive through our webhook route
    if api_base:  # another Bot API server: the sandbox, or a self-hosted telegram-bot-api
        base = api_base.rstrip("/")
        builder = builder.base_url(f"{base}/bot").base_file_url(f"{base}/file/bot")
    application = builder.build()
    install(application, conversation)
    application.add_error_handler(_on_error)
    return application


async def _on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    # Our handler catches its own errors; this sees python-telegram-bot's (never with the token: type only).
    log.warning("telegram: %s", type(context.error).__name__)


class TelegramBot:
    """The bot inside `lipameter serve` (and demo, and the tests)."""

    def __init__(self, application: Application, *, secret: str, webhook_url: str = "",
                 seen: TelegramUpdateLog | None = None, clock: Clock | None = None) -> None:
        self.application = application
        self.secret = secret
        self.webhook_url = webhook_url
        self.seen, self.clock = seen, clock  # None: every update is run (a single-process test)
        self.ready = False
        self._starting: asyncio.Task | None = None

    async def start(self) -> None:
        self._starting = asyncio.create_task(self._start_until_ready(), name="telegram-bot-start")

    async def _start_until_ready(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                await self.application.initialize()  # getMe: checks the token
                break
            except TelegramError as error:
                if delay >= 2:  # the first quick retries are the demo's own server coming up
                    hint = " (check TELEGRAM_BOT_TOKEN)" if isinstance(error, InvalidToken) else ""
                    log.warning("telegram bot not started: %s%s; retrying in %.0f s", type(error).__name__, hint, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        await self.application.start()
        if self.webhook_url:
            await self._register_webhook()
        self.ready = True
        log.info("telegram bot @%s started", self.application.bot.username)

    async def _register_webhook(self) -> None:
        try:
            await self.application.bot.set_webhook(self.webhook_url, secret_token=self.secret or None,
                                                   allowed_updates=ALLOWED_UPDATES)
        except TelegramError as error:  # the operator sees it; the webhook may already be set from before
            log.error("telegram webhook not registered: %s", getattr(error, "message", type(error).__name__))
            return
        log.info("telegram webhook registered at %s", self.webhook_url)

    async def first_time(self, data: dict) -> bool:
        """False for an update already taken, here or on another replica: Telegram re-sends an update
        it got no 2xx for, and after downtime delivers a backlog that may overlap what was handled."""
        update_id = data.get("update_id")
        if self.seen is None or self.clock is None or not isinstance(update_id, int) or isinstance(update_id, bool):
            return True  # a malformed update is refused by `feed`
        return await self.seen.first_time(update_id, at=self.clock.now())

    def feed(self, data: dict) -> bool:
        """Queue one update for processing; False if it is not an update at all."""
        try:
            update = Update.de_json(data, self.application.bot)
        except Exception:  # a malformed update: nothing to answer, nothing to retry
            return False
        if update is None:
            return False
        self.application.update_queue.put_nowait(update)
        return True

    async def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starting
        if self.application.running:
            await self.application.stop()
        with contextlib.suppress(Exception):
            await self.application.shutdown()


async def poll(application: Application, stop: asyncio.Event) -> None:
    """`lipameter bot --polling`: getUpdates instead of a webhook, until `stop` is set."""
    async with application:
        await application.bot.delete_webhook()  # Telegram refuses getUpdates while a webhook is set
        await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        await application.start()
        log.info("telegram bot @%s polling; Ctrl-C to stop", application.bot.username)
        await stop.wait()
        await application.updater.stop()
        await application.stop()
