"""An httpx client whose requests are spread over several small connection pools.

httpcore's pool (1.0.x, under httpx) walks all its connections on every request and every response
close, and for each idle one counts all of them again and polls its socket (encode/httpcore#1035, open):
its bookkeeping grows with the square of the connections it holds. 64 payment starts in flight against
Daraja answering in 100 ms keep ~64 connections open, and one pool then spent ~11 ms of the event loop
per push against 2.5 ms for the same push made alone: the serve process was CPU-bound on it (bench/run.py,
"Payment start"). Ten pools of a few connections each cost about what one push alone costs.

A request goes to the pool with the fewest requests in flight, the first one when they are even: calls
made one after another reuse one connection, as with a single pool. The limits apply to each pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx

POOLS = 10


class SpreadClient(httpx.AsyncClient):
    """httpx.AsyncClient, each of whose transports (the direct one, and one per proxy the environment
    names, as httpx builds them) is a SpreadTransport of POOLS of them, all on one SSL context: each
    context loads the CA bundle (~1 MB and ~0.2 s on the shared machine), ten of them would be ten."""

    def _init_transport(self, **options: Any) -> httpx.AsyncBaseTransport:
        if options.get("transport") is not None:
            return options["transport"]
        init, options = super()._init_transport, self._one_ssl_context(options)
        return SpreadTransport([init(**options) for _ in range(POOLS)])

    def _init_proxy_transport(self, proxy: httpx.Proxy, **options: Any) -> httpx.AsyncBaseTransport:
        init, options = super()._init_proxy_transport, self._one_ssl_context(options)
        return SpreadTransport([init(proxy, **options) for _ in range(POOLS)])

    def _one_ssl_context(self, options: dict[str, Any]) -> dict[str, Any]:
        context = getattr(self, "_spread_ssl_context", None)  # set here: httpx's __init__ is still running
        if context is None:
            context = httpx.create_ssl_context(verify=options.get("verify", True), cert=options.get("cert"),
                                               trust_env=options.get("trust_env", True))
            self._spread_ssl_context = context
        return {**options, "verify": context, "cert": None}


class SpreadTransport(httpx.AsyncBaseTransport):
    def __init__(self, pools: Sequence[httpx.AsyncBaseTransport]) -> None:
        self._pools = list(pools)
        self._in_flight = [0] * len(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self._pools)), key=self._in_flight.__getitem__)
        self._in_flight[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            self._in_flight[index] -= 1
            raise
        # The connection is busy until the body is read and the response closed.
        response.stream = _Releasing(response.stream, lambda: self._release(index))
        return response

    @property
    def in_flight(self) -> tuple[int, ...]:
        """Requests in flight on each pool (answered but not yet closed included)."""
        return tuple(self._in_flight)

    def _release(self, index: int) -> None:
        self._in_flight[index] -= 1

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Releasing(httpx.AsyncByteStream):
    """The pool's response stream, calling `release` once when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream | httpx.SyncByteStream, release: Callable[[], None]) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream, self._release = stream, release
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if not self._released:
                self._released = True
                self._release()
