"""The HTTP side: one pooled client per pump, sending each claim's request to Datadog."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Final, Protocol

import aiohttp
import httpx
from pydantic import SecretStr

from workers.delivery.exchange import AiohttpExchange, Exchange, HttpxExchange
from workers.delivery.operations import ApiRequest
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
    delivered it. aiohttp's own error decides when there is one (also as the cause of an
    httpx error: httpx-aiohttp maps them coarsely, a server that hung up to ``ConnectTimeout``).
    """
    cause = exc if isinstance(exc, aiohttp.ClientError) else exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return not isinstance(cause, NOT_SENT_AIOHTTP_ERRORS)
    return not isinstance(exc, NOT_SENT_ERRORS)


class Sender(Protocol):
    """Something that sends one request to Datadog and says what happened."""

    async def send(self, request: ApiRequest) -> Attempt: ...

    async def aclose(self) -> None: ...


class DatadogSender:
    """Sends each request to ``<base_url><path>`` with the API key (and the application key
    for PATCH and DELETE); never raises for HTTP.

    Over aiohttp (``AiohttpExchange``) unless given ``transport``: any httpx transport, the
    seam for tests (``httpx.MockTransport``) and other clients.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr,
        timeout_s: float,
        max_connections: int = 128,
        transport: httpx.AsyncBaseTransport | None = None,
        app_key: SecretStr | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._exchange: Exchange = (
            AiohttpExchange(max_connections=max_connections, timeout_s=timeout_s)
            if transport is None
            else HttpxExchange(transport, timeout_s=timeout_s)
        )
        self._base_url = base_url.rstrip("/")
        self._headers = {
            "DD-API-KEY": api_key.get_secret_value(),
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        # A request without the application key gets Datadog's 403, which pauses PATCH and
        # DELETE as a refused key would; the workers do not send them without one.
        self._app_headers = self._headers | (
            {"DD-APPLICATION-KEY": app_key.get_secret_value()} if app_key else {}
        )

    def __repr__(self) -> str:
        return f"DatadogSender(base_url={self._base_url!r})"

    async def send(self, api_request: ApiRequest) -> Attempt:
        """Send one request; transport failures and timeouts come back as ``Attempt.error``,
        with ``in_doubt`` set when the request may still land."""
        app_key = api_request.needs_app_key
        started = time.perf_counter()
        try:
            # A hard bound as well: a client must not hold a claim past its lease.
            async with asyncio.timeout(self._timeout_s + 1.0):
                answer = await self._exchange.request(
                    api_request.method,
                    self._base_url + api_request.path,
                    self._app_headers if app_key else self._headers,
                    api_request.content,
                )
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            # An answer that is not HTTP (a bad status line, header or chunk) came after the
            # request was written: may_have_landed says so.
            error = f"{type(exc).__name__}: {exc}"[:MAX_BODY_KEPT]
            elapsed_s = time.perf_counter() - started
            return Attempt(
                None, {}, "", error, elapsed_s, in_doubt=may_have_landed(exc), app_key=app_key
            )
        except TimeoutError:
            error = f"no answer within {self._timeout_s + 1.0:g} s"
            elapsed_s = time.perf_counter() - started
            return Attempt(None, {}, "", error, elapsed_s, in_doubt=True, app_key=app_key)
        # Only the head of the body is kept: decode no more of it than can be kept.
        body = answer.body[: 4 * MAX_BODY_KEPT].decode("utf-8", "replace")[:MAX_BODY_KEPT]
        return Attempt(
            answer.status,
            answer.headers,
            body,
            elapsed_s=time.perf_counter() - started,
            app_key=app_key,
            received_at=time.monotonic(),
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._exchange.aclose()


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
