"""Shared fixtures: a real Redis (DB 15, a key prefix per test), fakeredis, waiting helpers.

Tests never flush a database: each one works under its own key prefix and deletes exactly
its keys afterwards, so runs can share a Redis with anything else.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from forwarder.protocol import RedisKeys
from harness.stack import Worker, Workers, delete_keys
from harness.standin import StandinServer

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis the suite runs against; a clear failure if it is not there."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"no Redis at {REDIS_URL} ({exc}); start one or set TEST_REDIS_URL")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    delete_keys(redis_url, "{" + name + "}*")


@pytest.fixture
def keys(prefix: str) -> RedisKeys:
    """Key names under this test's prefix."""
    return RedisKeys(prefix)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# --- integration: the stand-in API and real worker processes ---------------------------


@pytest.fixture
def api_key() -> str:
    """A key of this test's own, so that a leak of it into any output can be searched for."""
    return f"test-key-{uuid.uuid4().hex}"


@pytest.fixture
def standin(api_key: str) -> Iterator[StandinServer]:
    """The local stand-in of Datadog's DORA API, accepting ``api_key``."""
    with StandinServer(api_key) as server:
        yield server


@pytest.fixture
def workers(
    redis_url: str,
    prefix: str,
    standin: StandinServer,
    api_key: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Workers]:
    """Real worker processes for this test; stopped after it, their logs checked for the key."""
    started = Workers(redis_url, prefix, standin.url, api_key, tmp_path)
    yield started
    started.stop_all()
    text = started.logs()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(text[-8000:])
    assert api_key not in text, "the API key appeared in a worker's log"


@pytest.fixture
def start_worker(workers: Workers) -> Callable[..., Worker]:
    """Start a real worker process: ``start_worker(*celery_args, key=..., **env)``."""
    return workers.start


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
