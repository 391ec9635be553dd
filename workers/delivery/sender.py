"""The HTTP side: one pooled client per process, sending each claim's request to Datadog."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Final, Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from pydantic import SecretStr

from workers.delivery.operations import POST_PATHS, ApiRequest
from workers.delivery.records import MAX_BODY_KEPT, Attempt

USER_AGENT: Final = "dora-forwarder/0.1"

NOT_SENT_ERRORS: Final = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
)
"""httpx errors raised before any byte of the request left: it cannot land."""

NOT_SENT_AIOHTTP_ERRORS: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
"""aiohttp errors raised before the request was written: no connection was ever made."""


def may_have_landed(exc: BaseException) -> bool:
    """Whether a request that failed with ``exc`` may still reach and be applied by the API.

    Only failures known to come before the request was written are safe (connect errors,
    waiting for a pooled connection); a timeout or a connection lost afterwards may have
    delivered it. httpx-aiohttp maps aiohttp's errors coarsely (a server that hung up
    becomes ``ConnectTimeout``), so aiohttp's own error, when there is one, decides.
    """
    cause = exc if isinstance(exc, aiohttp.ClientError) else exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return not isinstance(cause, NOT_SENT_AIOHTTP_ERRORS)
    return not isinstance(exc, NOT_SENT_ERRORS)


class Sender(Protocol):
    """Something that sends one request to Datadog and says what happened."""

    async def send(self, request: ApiRequest) -> Attempt: ...

    async def aclose(self) -> None: ...


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """aiohttp under httpx: httpx's own async transport collapses at 32+ requests in flight."""
    return AiohttpTransport(limits=httpx.Limits(max_connections=max_connections))


class DatadogSender:
    """Sends each request to ``<base_url><path>`` with the API key (and the application key
    for PATCH and DELETE); never raises for HTTP.

    ``transport`` is the seam for tests (``httpx.MockTransport``) and other clients. The
    transport is called directly, without ``httpx.AsyncClient``: a forwarder that posts to
    one URL needs none of its per-request work (URL merging, cookies, redirects, auth), and
    that work was half of the worker's CPU per request (see the README's profile).
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport,
        app_key: SecretStr | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._transport = transport
        self._base_url = base_url.rstrip("/")
        # The POST URLs, parsed once: every event's request goes to one of them. PATCH and
        # DELETE paths name their id, and are parsed as they come (they are few).
        self._post_urls = {path: httpx.URL(self._base_url + path) for path in POST_PATHS.values()}
        self._headers = [
            (b"Host", httpx.URL(self._base_url).netloc),
            (b"DD-API-KEY", api_key.get_secret_value().encode()),
            (b"Content-Type", b"application/json"),
            (b"Accept", b"application/json"),
            (b"User-Agent", USER_AGENT.encode()),
        ]
        # A request without the application key gets Datadog's 403, which pauses PATCH and
        # DELETE as a refused key would; the workers do not send them without one.
        self._app_headers = self._headers + (
            [(b"DD-APPLICATION-KEY", app_key.get_secret_value().encode())] if app_key else []
        )
        self._timeouts = {
            "connect": timeout_s,
            "read": timeout_s,
            "write": timeout_s,
            "pool": timeout_s,
        }

    def __repr__(self) -> str:
        return f"DatadogSender(base_url={self._base_url!r})"

    def _url(self, path: str) -> httpx.URL:
        return self._post_urls.get(path) or httpx.URL(self._base_url + path)

    async def send(self, api_request: ApiRequest) -> Attempt:
        """Send one request; transport failures and timeouts come back as ``Attempt.error``,
        with ``in_doubt`` set when the request may still land."""
        app_key = api_request.needs_app_key
        request = httpx.Request(
            api_request.method,
            self._url(api_request.path),
            headers=self._app_headers if app_key else self._headers,
            content=api_request.content,
            extensions={"timeout": self._timeouts},
        )
        started = time.perf_counter()
        try:
            # A hard bound as well: a transport must not hold a claim past its lease.
            async with asyncio.timeout(self._timeout_s + 1.0):
                response = await self._transport.handle_async_request(request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            # httpx-aiohttp lets some of aiohttp's errors through unmapped: an answer that is
            # not HTTP (a bad status line, header or chunk) raises ClientResponseError. Such
            # an answer came after the request was written, so may_have_landed says so.
            error = f"{type(exc).__name__}: {exc}"[:MAX_BODY_KEPT]
            elapsed_s = time.perf_counter() - started
            return Attempt(
                None, {}, "", error, elapsed_s, in_doubt=may_have_landed(exc), app_key=app_key
            )
        except TimeoutError:
            error = f"no answer within {self._timeout_s + 1.0:g} s"
            elapsed_s = time.perf_counter() - started
            return Attempt(None, {}, "", error, elapsed_s, in_doubt=True, app_key=app_key)
        return Attempt(
            response.status_code,
            response.headers,
            response.text[:MAX_BODY_KEPT],
            elapsed_s=time.perf_counter() - started,
            app_key=app_key,
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._transport.aclose()


class PrintingSender:
    """A dry run: writes each request it would send as one JSON line, and answers 202.

    One ``write`` per line, so that lines of several pool processes sharing the output do
    not interleave. The line carries no headers: there is no key to hide in a dry run.
    """

    def __init__(self, *, base_url: str, fd: int = 1) -> None:
        self._base_url = base_url.rstrip("/")
        self._fd = fd

    def __repr__(self) -> str:
        return f"PrintingSender(base_url={self._base_url!r})"

    async def send(self, request: ApiRequest) -> Attempt:
        """Print ``request``; it counts as accepted."""
        head = b'{"method":' + json.dumps(request.method).encode()
        head += b',"url":' + json.dumps(self._base_url + request.path).encode()
        body = request.content or b"null"
        os.write(self._fd, head + b',"body":' + body + b"}\n")
        return Attempt(202, {}, "", app_key=request.needs_app_key)

    async def aclose(self) -> None:
        """Nothing to close."""
