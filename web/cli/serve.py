"""The long-running commands: `migrate`, `serve` (the app, with the worker unless --no-worker),
`worker` (jobs and the reconcile sweep) and `bot --polling` (Telegram without a public URL)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import re
import signal

import uvicorn
from telegram.error import InvalidToken, TelegramError

from bot.runtime import poll
from storage.migrate import upgrade
from web.app import create_app
from web.bootstrap import build_container
from web.cli.common import configure_logging, fail, load_settings
from web.serving import uvicorn_options
from web.settings import Settings

log = logging.getLogger("lipameter.cli")


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = load_settings()
    upgrade(settings.database_url)
    print("database is up to date")


def cmd_serve(args: argparse.Namespace) -> None:
    settings = load_settings()
    missing = settings.missing_for_serve()
    if missing:
        fail("cannot serve: missing " + ", ".join(missing) + " (set them in the environment or .env; "
             "`lipameter demo` runs with the sandbox instead)")
    _check_telegram_secret(settings)
    problem = settings.telegram_webhook_problem()
    if problem:
        fail(f"cannot serve: {problem} (set TELEGRAM_WEBHOOK_URL, or TELEGRAM_API_BASE for a self-hosted "
             "Bot API server)")
    configure_logging(settings.log_level)
    for warning in settings.startup_warnings():
        log.warning("!!! %s", warning)
    if not settings.ussd_allowed_ips:
        log.warning("USSD_ALLOWED_IPS is empty: anyone who finds /ussd can post hops as any phone; "
                    "set it to Africa's Talking's addresses")
    # No access log: its lines carry CALLBACK_TOKEN (in the callback path) and phone filters.
    options = dict(host=args.host, port=args.port, log_level=settings.log_level.lower(), proxy_headers=False,
                   access_log=False, timeout_graceful_shutdown=30,
                   **uvicorn_options(settings))  # header and keep-alive timeouts, a connection limit
    if args.workers > 1:
        # The worker processes import the protocol by name (a class made at run time cannot cross to them).
        options["http"] = "web.serving:HeaderTimeoutH11Protocol"
        # Several processes on one port: each builds its app from the environment (uvicorn's factory).
        os.environ[SERVE_WORKER_ENV] = "0" if args.no_worker else "1"
        uvicorn.run("web.cli.serve:serve_app", factory=True, workers=args.workers, **options)
        return
    app = create_app(build_container(settings), run_worker=not args.no_worker)
    tune_garbage_collector()
    uvicorn.run(app, **options)


SERVE_WORKER_ENV = "LIPAMETER_SERVE_RUNS_WORKER"


def serve_app():
    """The app of one `serve --workers N` process (uvicorn imports and calls this)."""
    app = create_app(build_container(load_settings()), run_worker=os.environ.get(SERVE_WORKER_ENV, "1") == "1")
    tune_garbage_collector()
    return app


# The collector's youngest pass runs each time this many more container objects are alive than at the last
# one. At Python's 700, the objects of 64 requests in flight crossed it every few requests: ~1 pass every
# 10 USSD hops, ~10 % of the serving process's CPU in the passes and the promotions they cause (measured,
# alternated: 3,514-3,921 -> 3,998-4,080 hops/s). At 10,000 a rush of requests no longer crosses it; what
# it still catches (reference cycles: an exception's traceback, a cancelled task) waits a little longer.
YOUNG_GC_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Keep what the process built to start (modules, the app, ~190k objects) out of the garbage
    collector's full passes: each walked them all, stalling the event loop ~0.2 s of CPU, a few times a
    minute under load. They live as long as the process; nothing of theirs is ever garbage. And the
    youngest pass runs less often (YOUNG_GC_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a whole number, 1 or more")
    return int(text)


def _check_telegram_secret(settings: Settings) -> None:
    # Without it anyone could post updates to the webhook as any Telegram user; Telegram's own rule.
    secret = settings.telegram_webhook_secret.get_secret_value()
    if settings.telegram_bot_token.get_secret_value() and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
        fail("TELEGRAM_WEBHOOK_SECRET must be set with TELEGRAM_BOT_TOKEN: 1-256 characters of A-Z a-z 0-9 _ -")


def _stop_on_signals(stop: asyncio.Event) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)


def cmd_bot(args: argparse.Namespace) -> None:
    """`lipameter bot --polling`: the bot without a public URL (getUpdates), with the worker unless --no-worker."""
    if not args.polling:
        fail("`lipameter serve` runs the bot through its webhook; `lipameter bot --polling` is for a machine "
             "Telegram cannot reach")
    settings = load_settings()
    if not settings.telegram_bot_token.get_secret_value():
        fail("cannot run the bot: missing TELEGRAM_BOT_TOKEN")
    configure_logging(settings.log_level)

    async def run() -> None:
        container, stop = build_container(settings, telegram_polling=True), asyncio.Event()
        _stop_on_signals(stop)
        assert container.telegram_bot is not None  # the token is set
        jobs = [poll(container.telegram_bot.application, stop)]
        if not args.no_worker:
            jobs.append(container.worker.run(stop))
        try:
            await asyncio.gather(*jobs)
        finally:
            stop.set()
            await container.aclose()

    try:
        asyncio.run(run())
    except InvalidToken:  # its message quotes the token: never shown
        fail("Telegram rejected TELEGRAM_BOT_TOKEN", exit_code=1)
    except TelegramError as error:
        fail(f"could not start the bot: Telegram answered {type(error).__name__}", exit_code=1)


def cmd_worker(args: argparse.Namespace) -> None:
    settings = load_settings()
    missing = settings.missing_for_serve()
    if missing:
        fail("cannot run the worker: missing " + ", ".join(missing))
    configure_logging(settings.log_level)

    async def run() -> None:
        container, stop = build_container(settings), asyncio.Event()
        _stop_on_signals(stop)
        try:
            await container.worker.run(stop)
        finally:
            await container.aclose()

    asyncio.run(run())


def add_parsers(sub) -> None:
    sub.add_parser("migrate", help="create or upgrade the database").set_defaults(func=cmd_migrate)

    serve = sub.add_parser("serve", help="run the web app (and the worker unless --no-worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="run jobs in a separate `lipameter worker`")
    serve.add_argument("--workers", type=_positive, default=1,
                       help="web processes on the port (one per core); each runs a job worker unless --no-worker")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("worker", help="run the job worker and the reconcile sweep").set_defaults(func=cmd_worker)

    bot = sub.add_parser("bot", help="run the Telegram bot by polling (no public URL needed), with the worker")
    bot.add_argument("--polling", action="store_true", help="fetch updates with getUpdates instead of the webhook")
    bot.add_argument("--no-worker", action="store_true", help="run jobs in a separate `lipameter worker`")
    bot.set_defaults(func=cmd_bot)
