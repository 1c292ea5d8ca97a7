"""How `lipameter serve` runs uvicorn against slow or hostile clients.

uvicorn closes an idle kept-alive connection after `timeout_keep_alive`, but a connection that sends
part of its request headers and then stalls is never timed out: 500 of them hold 500 sockets forever.
`HeaderTimeoutH11Protocol` closes a connection whose request headers are not complete within
HTTP_HEADER_TIMEOUT_S; headers are capped in size, and `limit_concurrency` answers 503 beyond
HTTP_MAX_CONNECTIONS. Behind a proxy (nginx, a load balancer) set its own client header/body timeouts too
(README, "Running it for real")."""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEADER_BYTES = 16 * 1024  # our requests carry a few hundred bytes of headers


class HeaderTimeoutH11Protocol(H11Protocol):
    header_timeout_s = 10.0  # set per server by uvicorn_options()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Still waiting for a request's headers (partly sent): keep the clock running; else stop it.
        if self.conn.their_state is h11.IDLE and self.cycle_is_over():
            self._arm_header_timer()
        else:
            self._cancel_header_timer()

    def cycle_is_over(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and self.cycle_is_over() and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(settings) -> dict:
    """The uvicorn.run / uvicorn.Config options that bound what slow clients can hold."""
    protocol = type("ServeH11Protocol", (HeaderTimeoutH11Protocol,),
                    {"header_timeout_s": settings.http_header_timeout_s})
    return dict(http=protocol, timeout_keep_alive=settings.http_keep_alive_s,
                limit_concurrency=settings.http_max_connections, h11_max_incomplete_event_size=MAX_HEADER_BYTES)
