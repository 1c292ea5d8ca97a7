"""httpx's API over aiohttp's connection pool and HTTP parser: the transport of the client that Daraja's,
Telegram's and WhatsApp's gateways share (gateways/daraja.py:daraja_http_client).

httpx's own transport (httpcore: h11 in pure Python, over anyio) took ~2.0 ms of the event loop per request
with 64 in flight on the shared 2-core machine, aiohttp ~0.4 ms (the same JSON POST to the same server): a
payment start's one Daraja call was a third of its CPU. aiohttp's pool also keeps no per-request walk of
its connections, which httpcore's did (encode/httpcore#1035; we had spread requests over ten pools for it).

The gateways keep httpx's requests, responses and exceptions. aiohttp's failures are mapped onto httpx's
keeping the one distinction the money path lives by: a failure before the request could have left
(connecting: safe to send again) against one after it (the STK push may be on the tenant's phone: its
outcome is unknown and it is never resent; see gateways/daraja.py:_AMBIGUOUS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.request
from collections.abc import Iterator

import aiohttp
import httpx
import yarl

# The first class an error is an instance of decides (subclasses before their bases).
_FAILURES: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),  # still connecting: nothing was sent
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, unreachable, DNS, TLS handshake
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # sent, and no answer in time
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # sent (or being sent); the server hung up
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # an answer that is not HTTP
    (aiohttp.ClientError, httpx.ReadError),  # anything else once connected: the request may have gone
    (asyncio.TimeoutError, httpx.ReadTimeout),
    (OSError, httpx.ReadError),
)


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        for theirs, ours in _FAILURES:
            if isinstance(error, theirs):
                raise ours(f"{type(error).__name__}: {error}", request=request) from error
        raise


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made on first use, in the running event loop), no limit on connections, idle
    ones closed after `keepalive_expiry`. Proxies come from the environment (HTTP_PROXY, HTTPS_PROXY,
    NO_PROXY), read once, as httpx's own client reads them; cookies stay httpx's business.

    Not aiohttp's `trust_env`: it looks up ~/.netrc and the proxies in a worker thread on every request
    (two thread hops a push, measured to cost more than the whole transport saved), and a netrc entry for
    Daraja's host would clash with our Authorization header."""

    def __init__(self, *, ssl_context: ssl.SSLContext, keepalive_expiry: float | None) -> None:
        self._ssl, self._keepalive = ssl_context, keepalive_expiry
        self._proxies = urllib.request.getproxies_environment()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _current_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:  # a session serves the loop it was made in
            connector = aiohttp.TCPConnector(limit=0, ssl=self._ssl, keepalive_timeout=self._keepalive)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
            self._loop = loop
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()
        with _as_httpx_errors(request):
            async with self._current_session().request(
                # As httpx encoded it: aiohttp (yarl) would otherwise normalize it (`%7E` to `~`, ...).
                request.method, yarl.URL(str(request.url), encoded=True), headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
                proxy=self._proxy_for(request.url),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout.get("connect"),
                                              sock_read=timeout.get("read")),
            ) as answer:
                # Our answers are small JSON: read whole, so the connection goes back to the pool at once.
                content = await answer.read()
        # Still encoded as sent (auto_decompress off): httpx decodes it by its Content-Encoding, as ever.
        return httpx.Response(answer.status, headers=answer.raw_headers, content=content,
                              extensions={"http_version": b"HTTP/1.1",
                                          "reason_phrase": (answer.reason or "").encode("ascii", "replace")})

    def _proxy_for(self, url: httpx.URL) -> str | None:
        if url.scheme not in self._proxies or urllib.request.proxy_bypass_environment(url.host, self._proxies):
            return None
        return self._proxies[url.scheme]

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            with contextlib.suppress(RuntimeError):  # its loop is gone: nothing left to close there
                await session.close()


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        """Keeps none: nothing is sent back."""


class ApiClient(httpx.AsyncClient):
    """httpx's client for APIs that authenticate every request with a token (Daraja, Telegram, WhatsApp):
    it keeps no cookies and sends none. httpx's own jar parsed each answer through http.cookiejar (~3 % of
    a payment start's CPU) to keep a load balancer's cookie that nothing needs."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._no_cookies = _NoCookies()

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: httpx.Cookies) -> None:
        raise TypeError("ApiClient keeps no cookies")
