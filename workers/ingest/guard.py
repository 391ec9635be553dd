"""Connection limits uvicorn does not have: a deadline on request headers, a connection cap.

uvicorn (checked up to 0.55) arms no timer while it waits for a request: its only timer is
``timeout_keep_alive``, armed after a response and cancelled by any byte received. A client
that opens a connection and sends nothing, or drip-feeds its headers one byte at a time,
holds the connection for as long as it likes, before any key is checked. Its
``limit_concurrency`` answers a plain-text 503 with no ``Retry-After``, and logs a WARNING
for every request it refuses.

``guarded_protocol`` subclasses uvicorn's httptools protocol (the parser's callbacks are
httptools' public interface; ``connections``, ``cycle``, ``app`` and ``on_response_complete``
are uvicorn's, and ``tests/test_ingest_limits.py`` holds them to this behaviour):

- **Header deadline.** From the moment a connection opens, and from the first byte of each
  later request, the request line and headers must be complete within ``header_timeout_s``.
  Else the connection is closed (with a 408 when part of a request had arrived). The body
  has a deadline of its own, in the app, which can still answer.
- **Connection cap.** A connection opened while ``max_connections`` others are open gets a
  503 with ``Retry-After`` (Datadog's JSON shape) to its first request, and is closed.
  Waiting for the request's headers, rather than closing at once, lets the client read the
  503; the header deadline bounds that wait too.

Each refusal is counted through the shared ``RefusalLog`` (one WARNING per reason per
interval), never one line per connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from workers.ingest.answers import RETRY_AFTER_S
from workers.ingest.refusals import RefusalLog

OVER_LIMIT: Final = "more connections open than FORWARDER_INGEST_MAX_CONNECTIONS"
SLOW_HEADERS: Final = "request headers not complete within FORWARDER_INGEST_HEADER_TIMEOUT_S"

_UNAVAILABLE_BODY: Final = json.dumps({"errors": ["Service Unavailable"]}).encode()


def _timeout_response(header_timeout_s: float) -> bytes:
    body = json.dumps(
        {"errors": [f"Request Timeout: the headers did not arrive within {header_timeout_s:g} s"]}
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _host(client: Any) -> str:
    """The client's address from uvicorn's ``(host, port)``, or ``unknown``."""
    return str(client[0]) if isinstance(client, tuple | list) and client else "unknown"


def guarded_protocol(
    header_timeout_s: float, max_connections: int, refusals: RefusalLog
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header deadline and a cap on open connections.

    Pass the class as ``uvicorn.Config(http=...)``.
    """
    timeout_response = _timeout_response(header_timeout_s)

    async def unavailable(scope: Any, _receive: Any, send: Any) -> None:
        """The app a connection past the cap gets: 503, ``Retry-After``, then closed."""
        # Not the path: on this connection it can be anything the client wrote.
        refusals.refused(OVER_LIMIT, f"a request from {_host(scope.get('client'))}")
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_UNAVAILABLE_BODY)).encode()),
                    (b"retry-after", str(RETRY_AFTER_S).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _UNAVAILABLE_BODY})

    class GuardedProtocol(HttpToolsProtocol):
        """One connection, with a deadline on each request's headers (see the module)."""

        _deadline: asyncio.TimerHandle | None = None
        _received: bool = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                # uvicorn takes the app of each request from here: this connection's
                # first request gets the 503 (with `connection: close`), whatever it is.
                self.app = unavailable
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            # Between requests (after a response), the first byte starts the next
            # request's deadline; until then uvicorn's keep-alive timer covers the idle time.
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()
            self._received = True
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def _arm(self) -> None:
            self._received = False
            self._deadline = self.loop.call_later(header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            refusals.refused(SLOW_HEADERS, f"a connection from {_host(self.client)}")
            if self._received:
                self.transport.write(timeout_response)
            self.transport.close()

    return GuardedProtocol


_UVICORN_REFUSALS: Final = {
    "Invalid HTTP request received.": "not a valid HTTP request (uvicorn answered 400)",
    "Unsupported upgrade request.": "an Upgrade (WebSocket) request, which is not served",
}
# Logged by uvicorn right after "Unsupported upgrade request." when no WebSocket library is
# installed: the same refusal, already counted.
_UVICORN_ECHOES: Final = frozenset({"No supported WebSocket library detected"})


class UvicornRefusals(logging.Filter):
    """uvicorn's WARNING per refused request, counted through the ``RefusalLog`` instead.

    A filter on the ``uvicorn.error`` logger: every other record passes unchanged.
    """

    def __init__(self, refusals: RefusalLog) -> None:
        super().__init__()
        self.refusals = refusals

    def filter(self, record: logging.LogRecord) -> bool:
        """False (dropped) for a per-request refusal, which is counted; True for the rest."""
        message = record.msg if isinstance(record.msg, str) else ""
        if (reason := _UVICORN_REFUSALS.get(message)) is not None:
            self.refusals.refused(reason, "uvicorn does not log the client")
            return False
        return not message.startswith(tuple(_UVICORN_ECHOES))
