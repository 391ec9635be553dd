"""One HTTP request and its whole answer: the I/O under the sender, two ways.

- ``AiohttpExchange``, what workers use: aiohttp's pooled client, called directly. Under
  httpx (httpx-aiohttp), each request also built an ``httpx.Request`` and ``Response``,
  streamed the body through httpx and guessed its charset: 300 µs of CPU per request where
  aiohttp alone takes 125 µs (``python -m bench.http_clients``, README "Footprint").
- ``HttpxExchange``, over any ``httpx.AsyncBaseTransport``: the seam for tests
  (``httpx.MockTransport``) and for another client behind httpx's interface.

Both raise their client's own errors; the sender tells which of them may have landed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

KEEPALIVE_S = 5.0
"""How long an idle pooled connection is kept (httpx's default, which the sender had)."""


def joined(headers: CIMultiDictProxy[str]) -> Mapping[str, str]:
    """Headers with a repeated one joined as ``"7, 7"``, as httpx reads them.

    aiohttp's ``get`` gives only the first of a repeated header; the rate-limit reader takes
    the largest of the joined values, so a second, larger reset is never missed.
    """
    if len({name.lower() for name in headers}) == len(headers):
        return headers  # nothing repeated: the common case, as it is
    merged: CIMultiDict[str] = CIMultiDict()
    for name in headers:
        if name not in merged:
            merged[name] = ", ".join(headers.getall(name))
    return merged


@dataclass(frozen=True, slots=True)
class Answer:
    """What the API answered: its status, headers (case-insensitive) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Exchange(Protocol):
    """Sends one request and reads its whole answer; raises the client's own errors."""

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer: ...

    async def aclose(self) -> None: ...


class AiohttpExchange:
    """aiohttp's client: up to ``max_connections`` kept-alive connections, made on first use.

    The session is made inside the event loop that uses it (aiohttp's rule), on the first
    request. TLS trusts what httpx trusts (``httpx.create_ssl_context``: certifi, or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``); no proxy from the environment, no cookies, no
    redirects: a redirect answer is the API's answer.
    """

    def __init__(self, *, max_connections: int, timeout_s: float) -> None:
        self._max_connections = max_connections
        # Each phase bounded; the sender also bounds the whole exchange.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    ssl=httpx.create_ssl_context(),
                    # Shorter than servers' idle timeouts: a request written on a connection
                    # the server just closed fails in doubt, and waits to be sent again.
                    keepalive_timeout=KEEPALIVE_S,
                ),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _url(self, url: str) -> URL:
        # Parsed once per URL: every POST goes to one of two. PATCH and DELETE URLs name
        # their id; they are few, and not kept.
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = URL(url)
            if len(self._urls) < 16:
                self._urls[url] = parsed
        return parsed

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        """Send and read the whole answer (decompressed, as the API may gzip it)."""
        session = self._session_now()
        async with session.request(
            method, self._url(url), headers=headers, data=body, allow_redirects=False
        ) as response:
            content = await response.read()
            return Answer(response.status, joined(response.headers), content)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxExchange:
    """Any httpx transport (``httpx.MockTransport`` in tests), called directly.

    No ``httpx.AsyncClient``: a sender that posts to known URLs needs none of its work
    (URL merging, cookies, redirects, auth).
    """

    def __init__(self, transport: httpx.AsyncBaseTransport, *, timeout_s: float) -> None:
        self._transport = transport
        self._timeouts = {
            "connect": timeout_s,
            "read": timeout_s,
            "write": timeout_s,
            "pool": timeout_s,
        }

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        """Send through the transport and read the whole answer."""
        request = httpx.Request(
            method, url, headers=headers, content=body, extensions={"timeout": self._timeouts}
        )
        response = await self._transport.handle_async_request(request)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        return Answer(response.status_code, response.headers, content)

    async def aclose(self) -> None:
        """Close the transport."""
        await self._transport.aclose()
