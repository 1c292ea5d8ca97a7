"""Slow clients over raw sockets against an app served with `lipameter serve`'s uvicorn options: a
connection that never finishes its headers is closed, oversized headers are refused, and the server still
answers everyone else."""

from __future__ import annotations

import socket
import time

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.servers import ServerThread
from web.serving import uvicorn_options
from web.settings import Settings


def _app() -> Starlette:
    async def hello(request):
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)])


def _closed_by_server(sock: socket.socket, within_s: float = 0, deadline: float | None = None) -> bool:
    """True once the server has closed the socket (EOF or reset), False if it is still open at the deadline."""
    sock.settimeout(0.2)
    deadline = deadline or time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionError:
            return True
    return False


def _get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(4096)


def test_half_sent_requests_are_closed_and_others_still_served():
    settings = Settings(_env_file=None, http_header_timeout_s=0.5)
    server = ServerThread(_app(), **uvicorn_options(settings)).start()
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(50)]
        for sock in idle:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        assert _get(server.port).startswith(b"HTTP/1.1 200")  # the others are still served
        deadline = time.monotonic() + 10  # twenty times the header timeout
        still_open = [sock for sock in idle if not _closed_by_server(sock, deadline=deadline)]
        assert not still_open, f"{len(still_open)} of 50 half-sent requests are still open"
        for sock in idle:
            sock.close()
        # A kept-alive connection that starts a second request and stalls is closed too.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            sock.sendall(b"GET / HTTP/1.1\r\nHo")
            assert _closed_by_server(sock, within_s=10)
    finally:
        server.stop()


def test_oversized_headers_are_refused():
    server = ServerThread(_app(), **uvicorn_options(Settings(_env_file=None))).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024)
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 4") or answer == b""
    finally:
        server.stop()


def test_serve_options_set_timeouts_and_a_connection_limit():
    options = uvicorn_options(Settings(_env_file=None))
    assert options["timeout_keep_alive"] > 0 and options["limit_concurrency"] > 0
    assert options["h11_max_incomplete_event_size"] <= 32 * 1024
