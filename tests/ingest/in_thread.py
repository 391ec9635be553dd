"""The ingest app served in-process from an event loop of its own (an anyio portal), for
tests that call it from plain, synchronous code: hypothesis' property tests above all."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio.from_thread
import httpx
import redis

from config import Settings
from forwarder.protocol import RedisKeys
from harness.stack import delete_keys
from workers.ingest.app import create_app
from workers.ingest.keys import IngestKeys


@dataclass(frozen=True)
class AppInThread:
    """The portal that runs the app's loop, a client of the app, Redis and its stream."""

    portal: anyio.from_thread.BlockingPortal
    client: httpx.AsyncClient
    redis: redis.Redis
    stream: str


@contextmanager
def app_in_thread(redis_url: str, settings: Settings) -> Iterator[AppInThread]:
    """``create_app`` with its lifespan entered; every key of the settings' prefix is
    deleted afterwards."""
    keys = IngestKeys.from_settings(settings.ingest_keys, settings.dd_api_key)
    app = create_app(settings, keys)
    client = redis.Redis.from_url(redis_url)
    try:
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            portal.wrap_async_context_manager(app.router.lifespan_context(app)),
        ):
            transport = httpx.ASGITransport(app=app)
            http = httpx.AsyncClient(transport=transport, base_url="http://ingest.test")
            try:
                yield AppInThread(portal, http, client, RedisKeys(settings.key_prefix).ingest)
            finally:
                portal.call(http.aclose)
    finally:
        client.close()
        delete_keys(redis_url, "{" + settings.key_prefix + "}*")
