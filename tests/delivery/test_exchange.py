"""The sender's HTTP client, aiohttp called directly, against a real server on loopback."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from pydantic import SecretStr

from workers.delivery.operations import ApiRequest, Step
from workers.delivery.ratelimit import retry_after_s
from workers.delivery.records import Attempt
from workers.delivery.sender import DatadogSender

SEEN = web.AppKey("seen", list[dict[str, str]])


async def _refused_gzipped(request: web.Request) -> web.Response:
    body = gzip.compress(b'{"errors":["Forbidden: the key is not valid"]}')
    return web.Response(
        status=403, body=body, headers={"Content-Encoding": "gzip"}, content_type="application/json"
    )


async def _twice_reset(request: web.Request) -> web.Response:
    response = web.json_response({"data": {"id": "x"}}, status=202)
    response.headers.add("X-RateLimit-Reset", "2")
    response.headers.add("X-RateLimit-Reset", "9")
    return response


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def _seen(request: web.Request) -> web.Response:
    request.app[SEEN].append(dict(request.headers))
    return web.json_response({"data": {"id": "x"}}, status=202, headers={"Set-Cookie": "a=b"})


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[str, web.Application]]:
    app = web.Application()
    app[SEEN] = []
    app.router.add_post("/api/v2/dora/failure", _seen)
    app.router.add_post("/gzip/api/v2/dora/failure", _refused_gzipped)
    app.router.add_post("/redirect/api/v2/dora/failure", _redirect)
    app.router.add_post("/twice/api/v2/dora/failure", _twice_reset)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", app
    await runner.cleanup()


async def _with_server(check: Callable[[str, web.Application], Awaitable[None]]) -> None:
    async with serving() as (url, app):
        await check(url, app)


def _post() -> ApiRequest:
    return ApiRequest(Step.POST, "POST", "/api/v2/dora/failure", {"data": {}}, "digest")


async def _send(base_url: str, times: int = 1, key: str = "k") -> Attempt:
    """Send the POST ``times`` over one sender (its pool), closed after; the last answer."""
    sender = DatadogSender(base_url=base_url, api_key=SecretStr(key), timeout_s=5)
    try:
        for _ in range(times):
            attempt = await sender.send(_post())
    finally:
        await sender.aclose()
    return attempt


def test_a_gzipped_error_body_is_read_as_text() -> None:
    asyncio.run(_with_server(_gzipped))


async def _gzipped(url: str, _: web.Application) -> None:
    attempt = await _send(url + "/gzip")
    assert attempt.status == 403
    assert attempt.body == '{"errors":["Forbidden: the key is not valid"]}'


def test_a_redirect_is_the_answer_not_followed() -> None:
    asyncio.run(_with_server(_redirected))


async def _redirected(url: str, _: web.Application) -> None:
    before = time.monotonic()
    attempt = await _send(url + "/redirect")
    assert attempt.status == 302
    # When it came, on the clock the gate counts X-RateLimit-Reset from.
    assert attempt.received_at is not None
    assert before <= attempt.received_at <= time.monotonic()


def test_headers_keys_and_no_cookies() -> None:
    """The API key goes in DD-API-KEY; a cookie the API sets is never sent back."""
    asyncio.run(_with_server(_headers))


async def _headers(url: str, app: web.Application) -> None:
    last = await _send(url, times=2, key="the-key")  # the second after the API set a cookie
    assert last.status == 202
    assert last.headers["content-type"].startswith("application/json"), "case-insensitive"
    assert [seen["DD-API-KEY"] for seen in app[SEEN]] == ["the-key", "the-key"]
    assert all("Cookie" not in seen for seen in app[SEEN])
    assert all(seen["User-Agent"].startswith("dora-forwarder/") for seen in app[SEEN])
    assert "DD-APPLICATION-KEY" not in app[SEEN][0]


def test_a_repeated_rate_limit_header_is_read_whole() -> None:
    """Two X-RateLimit-Reset headers: both values reach the gate, which takes the larger."""
    asyncio.run(_with_server(_twice))


async def _twice(url: str, _: web.Application) -> None:
    attempt = await _send(url + "/twice")
    assert attempt.headers["x-ratelimit-reset"] == "2, 9"
    assert retry_after_s(attempt.headers) == 9
