"""Instructions per USSD hop, which a busy machine does not change: `make bench`'s ratios moved ±15 % between
two server processes of the same code, more than most single changes to a hop; a count moves under 1 %.

    .venv/bin/python -m bench.instructions [--engine sqlite] [--requests 2000] [--paths bare,first,next]

Each path runs in its own process under `valgrind --tool=callgrind` (Debian package valgrind), counting only
the measured requests (callgrind_control switches the count on and off around them; aiosqlite's thread is
counted too). Requests go to the app in process as ASGI calls, 64 at a time as a rush sends them (so the
hops' reads and writes share statements as under `wrk`), without sockets, uvicorn or h11: what is counted
is the app. `bare` is bench/bare.py's USSD endpoint, the floor. Three runs of the same code fell within 0.7 % here;
the counts weigh instructions alike, so they miss cache misses, and the ratio to bare is not `make
bench`'s (that one includes the HTTP stack's share on both sides). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LANES = 64
WARM_UP = 500
TOGGLE_ENV = "LIPAMETER_CALLGRIND_TOGGLE"


def hop_body(path: str, n: int) -> bytes:
    """A first hop in a new session, or the next hop (`1`) on a session bench/seed.py stored; own phone each."""
    session, text = ("next", "1") if path == "next" else ("instr", "")
    return (f"sessionId={session}-{n}&serviceCode=%2A384%2A1%23&phoneNumber=%2B2547{n:08d}&networkCode=63902"
            f"&text={text}").encode()


async def post(app, body: bytes) -> bytes:
    """One POST /ussd as an ASGI call; the answer's body. Not through httpx's ASGITransport as bench/work.py
    goes: the client's own work would be counted with the app's, in this one process."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/ussd", "raw_path": b"/ussd", "query_string": b"", "root_path": "", "state": {},
             "headers": [(b"host", b"bench"), (b"content-type", b"application/x-www-form-urlencoded"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80)}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never disconnects
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")


async def rush(app, path: str, first: int, n: int) -> None:
    numbers = iter(range(first, first + n))

    async def lane() -> None:
        for k in numbers:
            answer = await post(app, hop_body(path, k))
            if not answer.startswith(b"CON"):
                raise RuntimeError(f"{path} hop {k}: {answer[:200]!r}")

    await asyncio.gather(*(lane() for _ in range(LANES)))


def toggle(on: bool) -> None:
    if os.environ.get(TOGGLE_ENV):
        subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True,
                       capture_output=True)


def one_path(path: str, engine: str, requests: int) -> None:
    """This process: set up, warm up, then the counted requests."""
    import uvloop

    from bench.bare import app as bare_app
    from bench.run import Sandboxes, database, settings_for
    from bench.seed import add_stack_meters, add_ussd_sessions
    from storage.migrate import upgrade
    from web.app import create_app
    from web.bootstrap import build_container
    from web.cli.serve import tune_garbage_collector

    with database(engine) as url:
        upgrade(url)
        sandboxes = Sandboxes()
        try:
            add_stack_meters(url, sandboxes)

            async def measure() -> None:
                app = create_app(build_container(settings_for(url, sandboxes, "http://127.0.0.1:9", 16)),
                                 run_worker=False)
                async with app.router.lifespan_context(app):
                    if path == "next":
                        await post(app, b"sessionId=next-template&serviceCode=%2A384%2A1%23&phoneNumber=%2B254700000000"
                                        b"&networkCode=63902&text=")
                        await asyncio.to_thread(add_ussd_sessions, url, WARM_UP + requests, like="next-template")
                    target = bare_app if path == "bare" else app
                    await rush(target, path, 0, WARM_UP)
                    tune_garbage_collector()  # as `serve` does once it has started
                    toggle(True)
                    await rush(target, path, WARM_UP, requests)
                    toggle(False)

            uvloop.run(measure())
        finally:
            sandboxes.stop()


def counted(path: str, engine: str, requests: int) -> int:
    """Instructions per request of `path`, from a callgrind run of one_path in its own process."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                   sys.executable, "-m", "bench.instructions", "--one", path, "--engine", engine,
                   "--requests", str(requests)]
        done = subprocess.run(command, env={**os.environ, TOGGLE_ENV: "1"}, capture_output=True, text=True,
                              check=False)
        totals = [line for line in out.read_text().splitlines() if line.startswith("totals:")] if out.exists() else []
        if done.returncode or not totals:
            raise RuntimeError(f"{path}: valgrind exited {done.returncode}: {done.stderr[-1500:]}")
        return int(totals[0].split()[1]) // requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--paths", default="bare,first,next")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the process valgrind runs
    args = parser.parse_args()
    if args.one:
        one_path(args.one, args.engine, args.requests)
        return
    counts: dict[str, int] = {}
    print(f"{args.engine}: {args.requests:,} requests a path, {LANES} at a time, in process")
    for path in args.paths.split(","):
        counts[path] = counted(path, args.engine, args.requests)
        floor = f"  ({counts[path] / counts['bare']:.2f}x bare)" if "bare" in counts and path != "bare" else ""
        print(f"  {path:<6} {counts[path]:>10,} instructions a request{floor}", flush=True)


if __name__ == "__main__":
    main()
