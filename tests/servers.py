"""Run ASGI apps on real loopback ports for end-to-end tests (real HTTP, no transport mocks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import uvicorn


class ServerThread:
    """A uvicorn server in a background thread with its own event loop, bound to 127.0.0.1:<free port>."""

    def __init__(self, app, *, port: int = 0, timeout_keep_alive: float = 5, **uvicorn_options) -> None:
        # IPPROTO_TCP (not 0): asyncio then sets TCP_NODELAY on accepted connections; set on the listener
        # too (Linux copies it). Without it every keep-alive answer waits ~40 ms for a delayed ACK.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # proxy_headers off, as `lipameter serve` runs it: X-Forwarded-For is ours to judge (web/http.py).
        options = dict(log_level="warning", lifespan="on", timeout_graceful_shutdown=2, proxy_headers=False,
                       timeout_keep_alive=timeout_keep_alive)
        config = uvicorn.Config(app, **{**options, **uvicorn_options})
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def stop_all(servers: Iterable[ServerThread]) -> None:
    """Stop several servers together: each notices only on its loop's next tick (~0.1 s), so one at a time
    a stack's sandboxes took that tick each."""
    servers = list(servers)
    for server in servers:
        server.server.should_exit = True
    for server in servers:
        server.stop()


def reserve_port() -> int:
    """A free loopback port, for a server whose URL must be known before its app is built."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app, *, port: int = 0) -> Iterator[ServerThread]:
    server = ServerThread(app, port=port).start()
    try:
        yield server
    finally:
        server.stop()
