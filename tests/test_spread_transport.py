"""gateways/spread_transport.py: concurrent calls spread over small pools, calls one after another reuse
one connection, a failure frees its place (real loopback HTTP)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateways.daraja import daraja_http_client
from gateways.spread_transport import POOLS, SpreadTransport
from tests.servers import ServerThread, reserve_port


class HeldServer:
    """Answers once `release` is set (or at once when it is set already), recording each request's client
    port: a new port is a new connection."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.arrived = 0
        self.release = threading.Event()
        self.release.set()

        async def hold(request: Request) -> JSONResponse:
            self.ports.append(request.client.port)
            self.arrived += 1
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return JSONResponse({"ok": True})

        self.server = ServerThread(Starlette(routes=[Route("/hold", hold)])).start()
        self.url = self.server.url + "/hold"


def pools(n: int) -> SpreadTransport:
    return SpreadTransport([httpx.AsyncHTTPTransport() for _ in range(n)])


@pytest.fixture
def held():
    server = HeldServer()
    yield server
    server.release.set()
    server.server.stop()


async def test_concurrent_requests_are_spread_and_released(held):
    transport = pools(3)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        held.release.clear()
        calls = [asyncio.create_task(client.get(held.url)) for _ in range(6)]
        while held.arrived < 6:
            await asyncio.sleep(0.01)
        assert transport.in_flight == (2, 2, 2)
        held.release.set()
        await asyncio.gather(*calls)
        assert transport.in_flight == (0, 0, 0)
        assert len(set(held.ports)) == 6


async def test_calls_one_after_another_reuse_one_connection(held):
    transport = pools(3)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        for _ in range(4):
            assert (await client.get(held.url)).status_code == 200
    assert len(set(held.ports)) == 1


async def test_a_failed_request_frees_its_place():
    transport = pools(2)
    async with httpx.AsyncClient(transport=transport, timeout=2) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{reserve_port()}/")  # nothing listens there
    assert transport.in_flight == (0, 0)


async def test_daraja_client_spreads_concurrent_pushes(held):
    client = daraja_http_client(5)
    async with client:
        transport = client._transport
        assert isinstance(transport, SpreadTransport)
        held.release.clear()
        calls = [asyncio.create_task(client.get(held.url)) for _ in range(3 * POOLS)]
        while held.arrived < 3 * POOLS:
            await asyncio.sleep(0.01)
        assert transport.in_flight == (3,) * POOLS
        held.release.set()
        await asyncio.gather(*calls)


async def test_daraja_client_goes_through_the_environments_proxy(held, monkeypatch):
    """HTTP_PROXY is honoured as by httpx's own client (a client given a transport would ignore it)."""
    seen: list[str] = []

    async def proxy(scope, receive, send):  # answers as the origin would: enough to see the request came here
        if scope["type"] == "http":
            seen.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"{}"})

    server = ServerThread(proxy).start()
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        async with daraja_http_client(5) as client:
            assert (await client.get(held.url)).status_code == 200
    finally:
        server.stop()
    assert seen == [held.url] and held.ports == []  # the absolute URL, as a forward proxy receives it


def test_daraja_client_loads_one_ssl_context(monkeypatch):
    """Ten pools, one CA bundle loaded (each SSL context loads its own: memory and start-up time)."""
    import ssl

    made = []
    real = ssl.create_default_context

    def counted(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    client = daraja_http_client(5)
    assert isinstance(client._transport, SpreadTransport) and len(made) == 1
