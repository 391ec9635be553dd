"""Fixtures of the sources' endpoint tests: the app with every source on, in-process, over
real Redis (db 15, the test's key prefix), and a check that nothing logged holds a secret.
A test module takes the log check with ``pytest.mark.usefixtures("no_secret_logged")``
(not autouse: hypothesis refuses function-scoped fixtures it did not ask for)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import redis

from config import Settings
from forwarder import Event
from tests.ingest.sources.support import enqueued, secrets_logged, serving, source_settings


@pytest.fixture
def no_secret_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Everything logged, at every level, is searched for the secrets afterwards."""
    caplog.set_level(logging.DEBUG)
    yield
    assert not secrets_logged(caplog)


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    """Every source on, with the support module's secrets."""
    return source_settings(redis_url, prefix)


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app, its lifespan entered, called in-process."""
    async with serving(settings) as client:
        yield client


@pytest.fixture
def stream(sync_redis: redis.Redis, prefix: str) -> Callable[[], list[Event]]:
    """What the ingest stream holds, decoded, each time it is called."""
    return lambda: enqueued(sync_redis, prefix)
