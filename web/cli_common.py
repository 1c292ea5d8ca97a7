"""What every command shares: one-line errors, settings, logging. (A module of its own so that
`python -m web.cli` and the `lipameter` script raise the same CliError class.)"""

from __future__ import annotations

import logging
from typing import NoReturn

from pydantic import ValidationError


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = 2) -> NoReturn:
    raise CliError(message, exit_code)


def load_settings(**overrides):
    from web.settings import Settings

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
