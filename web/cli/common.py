"""What every command shares: one-line errors, settings, logging, who is acting, and running a command
against a container built from the settings (closed when the command ends)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from pydantic import ValidationError

from web.bootstrap import Container, build_container
from web.settings import Settings

T = TypeVar("T")


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = 2) -> NoReturn:
    raise CliError(message, exit_code)


def load_settings(**overrides) -> Settings:
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        fail(f"invalid configuration: {problems}")
    problems = settings.validation_problems()
    if problems:
        fail("invalid configuration: " + "; ".join(problems))
    return settings


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every URL at INFO, and the callback URL carries CALLBACK_TOKEN: keep it out of logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cli_actor(args: argparse.Namespace) -> str:
    """Who is acting: `--by`, else the logged-in user; written to the audit log."""
    return getattr(args, "by", None) or getpass.getuser() or "cli"


def by_option() -> argparse.ArgumentParser:
    """The `--by` option, as a parent parser for the commands that change something."""
    by = argparse.ArgumentParser(add_help=False)
    by.add_argument("--by", default=None, help="who is acting (default: $USER); written to the audit log")
    return by


def run_with_container(fn: Callable[[Container], Awaitable[T]], *, need_tuya: bool = False,
                       settings: Settings | None = None) -> T:
    """Run `fn` against a container built from `settings` (default: the environment's), then close it."""
    settings = settings or load_settings()
    if need_tuya and not settings.tuya_enabled:
        fail("this needs the Tuya cloud: set TUYA_ENDPOINT, TUYA_ACCESS_ID and TUYA_ACCESS_SECRET")

    async def go() -> T:
        container = build_container(settings)
        try:
            return await fn(container)
        finally:
            await container.aclose()

    return asyncio.run(go())
