"""Whatever bytes come back, a request ends as an Attempt: never an exception out of ``send``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pydantic import SecretStr

from workers.delivery.operations import owed_requests
from workers.delivery.sender import DatadogSender

pytestmark = pytest.mark.anyio

NOT_HTTP = [
    pytest.param(b"HTTP/1.1 abc\r\n\r\n", id="bad-status-code"),
    pytest.param(b"garbage\r\n\r\n", id="not-http"),
    pytest.param(b"\xff\xfe\x00garbage", id="binary"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk-size"
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", id="negative-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-Bad\x00Header: 1\r\n\r\n", id="nul-in-header"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", id="short-body"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nabcde",
        id="bad-gzip",
    ),
]


@pytest.fixture
async def answering() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """A loopback server that reads a request and answers it with the given bytes."""
    servers: list[asyncio.Server] = []

    async def start(reply: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("reply", NOT_HTTP)
async def test_an_answer_that_is_not_http_is_an_attempt_in_doubt(
    answering: Callable[[bytes], Awaitable[str]], reply: bytes
) -> None:
    """A broken answer is a failed attempt with the reason; it came after the request was
    written, so the request may have landed (a resend of the current version follows)."""
    url = await answering(reply)
    sender = DatadogSender(base_url=url, api_key=SecretStr("k"), timeout_s=2.0, max_connections=4)
    try:
        attempt = await sender.send(
            owed_requests("incident-0000000001", {"id": "incident-0000000001"}, {})[0]
        )
    finally:
        await sender.aclose()
    assert attempt.status is None
    assert attempt.error
    assert attempt.in_doubt
