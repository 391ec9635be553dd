"""The HTTP side: one pooled client per process, POSTing merged incident states to Datadog."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from typing import Any, Final, Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from pydantic import SecretStr

from forwarder.protocol import KIND_DEPLOYMENT, KIND_FAILURE
from workers.delivery.records import MAX_BODY_KEPT, Attempt

PATHS: Final = {KIND_FAILURE: "/api/v2/dora/failure", KIND_DEPLOYMENT: "/api/v2/dora/deployment"}
"""Where each kind of event is POSTed."""
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
    """Something that delivers one incident's attributes and says what happened."""

    async def send(self, attributes: Mapping[str, Any], kind: str = KIND_FAILURE) -> Attempt: ...

    async def aclose(self) -> None: ...


def request_body(attributes: Mapping[str, Any]) -> bytes:
    """The JSON body Datadog expects for one incident's attributes."""
    return json.dumps({"data": {"attributes": attributes}}, separators=(",", ":")).encode()


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """aiohttp under httpx: httpx's own async transport collapses at 32+ requests in flight."""
    return AiohttpTransport(limits=httpx.Limits(max_connections=max_connections))


class DatadogSender:
    """POSTs to ``<base_url>/api/v2/dora/<kind>`` with the API key; never raises for HTTP.

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
    ) -> None:
        self._timeout_s = timeout_s
        self._transport = transport
        self._urls = {kind: httpx.URL(base_url.rstrip("/") + path) for kind, path in PATHS.items()}
        self._headers = [
            (b"Host", self._urls[KIND_FAILURE].netloc),
            (b"DD-API-KEY", api_key.get_secret_value().encode()),
            (b"Content-Type", b"application/json"),
            (b"Accept", b"application/json"),
            (b"User-Agent", USER_AGENT.encode()),
        ]
        self._timeouts = {
            "connect": timeout_s,
            "read": timeout_s,
            "write": timeout_s,
            "pool": timeout_s,
        }

    def __repr__(self) -> str:
        return f"DatadogSender(url={str(self._urls[KIND_FAILURE])!r})"

    async def send(self, attributes: Mapping[str, Any], kind: str = KIND_FAILURE) -> Attempt:
        """POST one event; transport failures and timeouts come back as ``Attempt.error``,
        with ``in_doubt`` set when the request may still land."""
        body = request_body(attributes)
        request = httpx.Request(
            "POST",
            self._urls[kind],
            headers=self._headers,
            content=body,
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
            return Attempt(None, {}, "", error, elapsed_s, in_doubt=may_have_landed(exc))
        except TimeoutError:
            error = f"no answer within {self._timeout_s + 1.0:g} s"
            return Attempt(None, {}, "", error, time.perf_counter() - started, in_doubt=True)
        return Attempt(
            response.status_code,
            response.headers,
            response.text[:MAX_BODY_KEPT],
            elapsed_s=time.perf_counter() - started,
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
        self._prefixes = {
            kind: b'{"method":"POST","url":'
            + json.dumps(self._base_url + path).encode()
            + b',"body":'
            for kind, path in PATHS.items()
        }

    def __repr__(self) -> str:
        return f"PrintingSender(base_url={self._base_url!r})"

    async def send(self, attributes: Mapping[str, Any], kind: str = KIND_FAILURE) -> Attempt:
        """Print the request for ``attributes``; it counts as accepted."""
        os.write(self._fd, self._prefixes[kind] + request_body(attributes) + b"}\n")
        return Attempt(202, {}, "")

    async def aclose(self) -> None:
        """Nothing to close."""
