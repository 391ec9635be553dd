"""CPU per request of the HTTP clients the sender could use, against one minimal server.

    python -m bench.http_clients                # 20,000 requests each, 64 in flight

The server (a bare asyncio protocol answering 202 with Datadog's rate-limit headers) runs in
a process of its own, so only the client's CPU is counted (``time.process_time`` of this
process). Each client sends the same JSON body to the same URL over kept-alive connections:

- ``aiohttp``: ``ClientSession.request``, what the workers' sender uses (``AiohttpExchange``);
- ``httpx over aiohttp``: an ``httpx.Request`` through httpx-aiohttp's transport, called
  directly, as the sender did before issue 15 (skipped when httpx-aiohttp is not installed);
- ``httpx.AsyncClient``: httpx's own client and transport (httpcore).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

from harness.stack import free_port

ANSWER_BODY = b'{"data":{"id":"abcdefabcdefabcdef12345"}}'
ANSWER = (
    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nX-RateLimit-Limit: 500\r\nX-RateLimit-Period: 10\r\n"
    b"X-RateLimit-Remaining: 499\r\nX-RateLimit-Reset: 7\r\n\r\n%s"
) % (len(ANSWER_BODY), ANSWER_BODY)
PATH = "/api/v2/dora/failure"
BODY = json.dumps(
    {"data": {"attributes": {"id": "x" * 30, "started_at": 1, "services": ["api"], "env": "p"}}}
).encode()
HEADERS = {"DD-API-KEY": "bench", "Content-Type": "application/json"}


class _Answering(asyncio.Protocol):
    """Answers every request it reads (head, then Content-Length bytes) with ``ANSWER``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport, self._buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self._buffer[:end].lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length :]
            self._transport.write(ANSWER)


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Answering, "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()


async def _measure(
    name: str, one: Callable[[], Awaitable[None]], count: int, in_flight: int
) -> None:
    for _ in range(500):  # connections made, code warm
        await one()
    slots = asyncio.Semaphore(in_flight)

    async def limited() -> None:
        async with slots:
            await one()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(limited() for _ in range(count)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"| {name} | {cpu / count * 1e6:,.0f} µs | {count / wall:,.0f} /s |", flush=True)


async def _clients(url: str, count: int, in_flight: int) -> None:
    print("| client | CPU per request | requests per second |\n|---|---|---|")
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight))

    async def with_aiohttp() -> None:
        async with session.request("POST", url, data=BODY, headers=HEADERS) as response:
            await response.read()

    await _measure("aiohttp (the sender's)", with_aiohttp, count, in_flight)
    await session.close()
    if importlib.util.find_spec("httpx_aiohttp") is not None:
        from httpx_aiohttp import AiohttpTransport  # noqa: PLC0415 - optional

        transport = AiohttpTransport(limits=httpx.Limits(max_connections=in_flight))
        parsed = httpx.URL(url)

        async def with_httpx_aiohttp() -> None:
            request = httpx.Request("POST", parsed, headers=HEADERS, content=BODY)
            response = await transport.handle_async_request(request)
            await response.aread()
            await response.aclose()
            _ = response.text

        await _measure(
            "httpx over aiohttp, transport called directly", with_httpx_aiohttp, count, in_flight
        )
        await transport.aclose()
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=in_flight))

    async def with_httpx() -> None:
        response = await client.post(url, content=BODY, headers=HEADERS)
        _ = response.text

    await _measure("httpx.AsyncClient (httpcore)", with_httpx, max(count // 10, 1000), in_flight)
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server's process
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.http_clients", "--serve", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        asyncio.run(_clients(f"http://127.0.0.1:{port}{PATH}", args.requests, args.in_flight))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
