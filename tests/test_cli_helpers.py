"""The in-process `lipameter` (tests/cli_helpers.py) shows what a process would, and leaves this one as it found it."""

from __future__ import annotations

import logging
import os
import sys
import threading

import pytest

from tests.cli_helpers import lipameter
from web.cli import audit


def test_logs_reach_stderr_as_in_a_fresh_process_and_the_logger_is_put_back(monkeypatch):
    def noisy(args) -> int:
        logging.getLogger("lipameter.noisy").warning("below the one-shot level")
        logging.getLogger("lipameter.noisy").error("the database went away")
        return 1

    monkeypatch.setattr(audit, "cmd_audit", noisy)
    root = logging.getLogger()
    before = root.handlers[:], root.level
    result = lipameter("audit", env={})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "ERROR lipameter.noisy: the database went away\n"  # main()'s basicConfig format
    assert (root.handlers, root.level) == before


def test_the_environment_stdin_and_streams_come_back_after_a_crash(monkeypatch):
    seen = {}

    def crash(args) -> int:
        seen.update(env=dict(os.environ), line=input())
        raise LookupError("a bug, not a user mistake")

    monkeypatch.setattr(audit, "cmd_audit", crash)
    monkeypatch.setenv("LIPAMETER_HELPER_PROBE", "outside")
    environ, streams = dict(os.environ), (sys.stdin, sys.stdout, sys.stderr)
    result = lipameter("audit", env={"ONLY": "this"}, stdin="typed\n")
    assert seen == {"env": {"ONLY": "this"}, "line": "typed"}
    assert result.returncode == 1 and "Traceback" in result.stderr and "LookupError" in result.stderr
    assert dict(os.environ) == environ and (sys.stdin, sys.stdout, sys.stderr) == streams


def test_argparse_exits_become_exit_codes():
    usage = lipameter("meter", "threshold", env={})
    assert usage.returncode == 2 and "the following arguments are required" in usage.stderr
    helped = lipameter("--help", env={})
    assert helped.returncode == 0 and "usage: lipameter" in helped.stdout and helped.stderr == ""


def test_other_threads_keep_their_output(monkeypatch, capsys):
    """A Stack's servers run in threads of this process: what they write during a command is not the command's."""
    go, done = threading.Event(), threading.Event()

    def server_thread() -> None:
        go.wait(10)
        print("from the server thread")
        logging.getLogger("lipameter.server").error("a server's own error")
        done.set()

    def command(args) -> int:
        go.set()
        assert done.wait(10)
        print("from the command")
        return 0

    monkeypatch.setattr(audit, "cmd_audit", command)
    thread = threading.Thread(target=server_thread)
    thread.start()
    result = lipameter("audit", env={})
    thread.join()
    assert (result.returncode, result.stdout, result.stderr) == (0, "from the command\n", "")
    assert "from the server thread" in capsys.readouterr().out


def test_long_running_commands_are_left_to_a_real_process():
    with pytest.raises(ValueError, match="lipameter_process"):
        lipameter("serve", env={})


async def test_an_async_test_cannot_run_a_command():
    with pytest.raises(RuntimeError, match="sync test"):
        lipameter("audit", env={})
