"""`lipameter` as the tests run it, written once.

`lipameter()` calls `web.cli.main` in the test process: most tests are about what a command does, and a
`python -m web.cli` subprocess paid ~2 s of imports per call. For the call it swaps what a command reads
or writes process-wide, and puts it back after, even on error: the environment (wholesale), stdin,
stdout and stderr, and the root logger, so that main()'s `logging.basicConfig` writes to the captured
stderr at ERROR level as it does in a fresh process. What a user sees, the test sees: argparse's exit is
its exit code, an unexpected exception a traceback on stderr and 1, as the interpreter would make them.

`lipameter_process()` runs the installed console script for real, where the process itself is under test:
a long-running command refusing to start, the entry point end to end."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
from contextvars import ContextVar
from pathlib import Path
from typing import TextIO

from web.cli import LONG_RUNNING, main

ROOT = Path(__file__).resolve().parent.parent
LIPAMETER = str(Path(sys.executable).parent / "lipameter")  # the console script `pip install` made

# The sandboxes and the app of a Stack run in threads of this process, and may print or log while a command
# runs: what they write stays theirs. The call's own output is found by its context, which its asyncio tasks
# and asyncio.to_thread workers (the Tuya client) inherit.
_captured: ContextVar[tuple[io.StringIO, io.StringIO] | None] = ContextVar("lipameter_captured", default=None)


class _Routed(io.TextIOBase):
    """sys.stdout or sys.stderr during a call: the call's writes go to its buffer, anyone else's to `usual`."""

    def __init__(self, which: int, usual: TextIO) -> None:
        self._which, self._usual = which, usual

    def _target(self) -> TextIO:
        captured = _captured.get()
        return captured[self._which] if captured is not None else self._usual

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()


def with_database(database_url: str, **extra: str) -> dict[str, str]:
    """This process's environment with DATABASE_URL (and `extra`) set: the shell a command runs from."""
    return {**os.environ, "DATABASE_URL": database_url, **extra}


def _set_environ(env: dict[str, str]) -> None:
    """os.environ becomes `env`, touching only what differs: a thread reading a variable both share (a
    proxy setting, say) never sees it missing."""
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@contextlib.contextmanager
def _environment(env: dict[str, str]):
    saved = dict(os.environ)
    try:
        _set_environ(env)
        yield
    finally:
        _set_environ(saved)


@contextlib.contextmanager
def _fresh_root_logger():
    """No handlers on the root logger for the call, as in a new process; pytest's own put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        yield
    finally:
        for handler in root.handlers:  # basicConfig's, bound to the call's stderr
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def lipameter(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run `lipameter ARGS` in this process with exactly `env` as its environment and `stdin` as its input."""
    if args and args[0] in LONG_RUNNING:
        raise ValueError(f"`lipameter {args[0]}` does not return: run it with lipameter_process()")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop runs here: main() may start its own
    else:
        raise RuntimeError("lipameter() runs an event loop of its own (asyncio.run): call it from a sync test")
    out, err = io.StringIO(), io.StringIO()
    token = _captured.set((out, err))
    stdin_before = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with (_environment(env), _fresh_root_logger(), contextlib.redirect_stdout(_Routed(0, sys.stdout)),
              contextlib.redirect_stderr(_Routed(1, sys.stderr))):
            try:
                returncode = main(list(args))
            except SystemExit as done:  # argparse's --help and usage errors
                if done.code is None or isinstance(done.code, int):
                    returncode = done.code or 0
                else:
                    print(done.code, file=sys.stderr)
                    returncode = 1
            except Exception:  # what the interpreter prints for an uncaught exception
                traceback.print_exc()
                returncode = 1
    finally:
        sys.stdin = stdin_before
        _captured.reset(token)
    return subprocess.CompletedProcess(["lipameter", *args], returncode, out.getvalue(), err.getvalue())


def lipameter_process(*args: str, env: dict[str, str], stdin: str = "",
                      timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed `lipameter` console script as its own process."""
    return subprocess.run([LIPAMETER, *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)
