"""Fixtures of the delivery tests: a Redis client (real, or real and fakeredis) and a store.

A module that sets ``ON_FAKEREDIS_TOO = True`` runs each of its tests that uses ``client``
(or ``store``) twice: on the real Redis (``[real]``) and on fakeredis (``[fake]``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import fakeredis
import pytest
import redis.asyncio as aioredis

from forwarder.protocol import RedisKeys
from workers.delivery.store import Store

UNLIMITED_FOREVER: Final = 10**15
"""An ``unlimited_ms`` far in the future: the gate knows the API announces no limits."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests of an ``ON_FAKEREDIS_TOO`` module that use ``client`` on both Redises."""
    if "client" in metafunc.fixturenames and getattr(metafunc.module, "ON_FAKEREDIS_TOO", False):
        metafunc.parametrize("client", ["real", "fake"], indirect=True)


@pytest.fixture
async def client(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Any]:
    """An asyncio client on the test database, or fakeredis in its place (``[fake]``)."""
    made: Any = (
        fakeredis.FakeAsyncRedis()
        if getattr(request, "param", "real") == "fake"
        else aioredis.Redis.from_url(redis_url)
    )
    yield made
    await made.aclose()


@pytest.fixture
async def store(client: Any, keys: RedisKeys) -> Store:
    """A store with its consumer group, whose gate knows the API announces no limits."""
    store = Store(client, keys)
    await store.ensure_group()
    await client.hset(keys.gate, "unlimited_ms", UNLIMITED_FOREVER)
    return store
