"""gateways/aiohttp_transport.py under the client Daraja's, Telegram's and WhatsApp's gateways share (real
loopback HTTP): answers arrive as httpx gave them, connections are reused and run side by side, the
environment's proxy is used, and each failure is told as the httpx error that says whether the request
may have left (tests/test_daraja_gateway.py holds the gateway to what it does with each)."""

from __future__ import annotations

import asyncio
import gzip
import threading

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateways.daraja import daraja_http_client
from tests.servers import ServerThread, reserve_port


class HeldServer:
    """Answers once `release` is set (at once while it is), recording each request's client port (a new
    port is a new connection), its headers and body."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.arrived = 0
        self.release = threading.Event()
        self.release.set()

        async def hold(request: Request) -> JSONResponse:
            self.ports.append(request.client.port)
            self.seen.append((dict(request.headers), await request.body()))
            self.arrived += 1
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return JSONResponse({"ok": True}, headers={"set-cookie": "lb=1; Path=/"})

        async def zipped(_: Request) -> Response:
            return Response(gzip.compress(b'{"ResponseCode": "0"}'), media_type="application/json",
                            headers={"content-encoding": "gzip"})

        async def teapot(_: Request) -> JSONResponse:
            return JSONResponse({"errorCode": "418"}, status_code=418)

        async def echo(request: Request) -> JSONResponse:
            return JSONResponse({"path": request.scope["raw_path"].decode(),
                                 "query": request.scope["query_string"].decode()})

        self.server = ServerThread(Starlette(routes=[Route("/hold", hold, methods=["GET", "POST"]),
                                                     Route("/zipped", zipped), Route("/teapot", teapot),
                                                     Route("/echo/{rest:path}", echo)])).start()
        self.url = self.server.url + "/hold"


@pytest.fixture
def held():
    server = HeldServer()
    yield server
    server.release.set()
    server.server.stop()


async def test_an_answer_reads_as_httpx_gave_it(held):
    async with daraja_http_client(5) as client:
        answer = await client.post(held.url, json={"Amount": 100}, headers={"Authorization": "Bearer t"})
        assert (answer.status_code, answer.json(), answer.headers["content-type"]) == (200, {"ok": True},
                                                                                       "application/json")
        assert answer.reason_phrase == "OK" and answer.http_version == "HTTP/1.1"
        zipped = await client.get(held.server.url + "/zipped")  # sent encoded; decoded once, by httpx
        assert zipped.json() == {"ResponseCode": "0"}
        refused = await client.get(held.server.url + "/teapot")
        assert (refused.status_code, refused.json()) == (418, {"errorCode": "418"})
        echoed = await client.get(held.server.url + "/echo/bot1:AB/a%2Fb%7E", params={"x": "1 2", "y": "é"})
        assert echoed.json() == {"path": "/echo/bot1:AB/a%2Fb%7E", "query": "x=1+2&y=%C3%A9"}  # as httpx encoded it
        await client.get(held.url)
    (headers, body), (again, _) = held.seen
    assert body == b'{"Amount":100}' and headers["authorization"] == "Bearer t"
    assert headers["content-type"] == "application/json" and headers["user-agent"].startswith("python-httpx/")
    assert "cookie" not in again  # these APIs authenticate each request; a load balancer's cookie is not kept


async def test_calls_one_after_another_reuse_one_connection_and_a_rush_runs_side_by_side(held):
    async with daraja_http_client(5) as client:
        for _ in range(3):
            assert (await client.get(held.url)).status_code == 200
        assert len(set(held.ports)) == 1
        held.release.clear()
        calls = [asyncio.create_task(client.get(held.url)) for _ in range(20)]
        while held.arrived < 23:  # all twenty in the server at once: no pool limit queues them
            await asyncio.sleep(0.01)
        held.release.set()
        assert [answer.status_code for answer in await asyncio.gather(*calls)] == [200] * 20


async def test_nothing_listening_is_a_connect_error_the_push_may_be_sent_again_after():
    async with daraja_http_client(2) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{reserve_port()}/")


async def test_a_server_hanging_up_after_the_request_is_a_protocol_error_the_push_is_not_sent_again_after():
    """The request arrived whole, then the connection closed without an answer: the push may be on the
    phone. It must not surface as a connect error (which the gateway retries)."""
    received = asyncio.Event()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        received.set()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with daraja_http_client(2) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(f"http://127.0.0.1:{port}/mpesa/stkpush/v1/processrequest", json={})
        assert received.is_set()
    finally:
        server.close()
        await server.wait_closed()


async def test_no_answer_in_time_is_a_read_timeout(held):
    held.release.clear()
    async with daraja_http_client(0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(held.url)


async def test_the_environments_proxy_is_used_as_by_httpxs_own_client(held, monkeypatch):
    seen: list[str] = []

    async def proxy(scope, receive, send):  # answers as the origin would: enough to see the request came here
        if scope["type"] == "http":
            seen.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"{}"})

    server = ServerThread(proxy).start()
    monkeypatch.setenv("HTTP_PROXY", server.url)
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        async with daraja_http_client(5) as client:
            assert (await client.get(held.url)).status_code == 200
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with daraja_http_client(5) as client:
            assert (await client.get(held.url)).status_code == 200
    finally:
        server.stop()
    assert seen == [held.url] and len(held.ports) == 1  # the absolute URL, as a forward proxy receives it
