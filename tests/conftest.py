"""Shared fixtures: a real Redis (DB 15, a key prefix per test), clients, a clean environment.

Tests never flush a database: each one works under its own key prefix and deletes exactly
its keys afterwards, so runs can share a Redis with anything else.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from forwarder import Publisher
from forwarder.protocol import RedisKeys
from harness.run import RunProcess
from harness.stack import Worker, Workers, delete_keys, wait_until, worker_env
from harness.standin import StandinServer

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

CALL_REPORT = pytest.StashKey[pytest.TestReport]()
"""Where a test's item keeps the report of its call phase (fixtures read it at teardown)."""


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


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the pump's loop; trio is not a dependency)."""
    return "asyncio"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on the test database, as the pump and the store use."""
    real = aioredis.Redis.from_url(redis_url)
    yield real
    await real.aclose()


@pytest.fixture
def publisher(redis_url: str, prefix: str) -> Iterator[Publisher]:
    """A ``Publisher`` on this test's prefix."""
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        yield publisher


# --- the environment the settings are read from ------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FORWARDER_* or DD_* variable of the machine's leaks into settings read in-process."""
    for name in list(os.environ):
        if name.startswith(("FORWARDER_", "DD_")):
            monkeypatch.delenv(name)


@pytest.fixture
def redis_env(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str
) -> None:
    """A clean environment whose settings point at the test database and this test's prefix."""
    monkeypatch.setenv("FORWARDER_REDIS_URL", redis_url)
    monkeypatch.setenv("FORWARDER_KEY_PREFIX", prefix)


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
    report = request.node.stash.get(CALL_REPORT, None)
    if report is not None and report.failed:
        print(text[-8000:])
    assert api_key not in text, "the API key appeared in a worker's log"


@pytest.fixture
def start_worker(workers: Workers) -> Callable[..., Worker]:
    """Start a real worker process: ``start_worker(*celery_args, key=..., **env)``."""
    return workers.start


@pytest.fixture
def deliver_one(redis_url: str, prefix: str, standin: StandinServer) -> Callable[..., str]:
    """``deliver_one(tag, timeout_s=30)``: publish one incident (id ``<tag>-<random>``) and
    wait until the stand-in API got a request for it; its id."""

    def deliver(tag: str, timeout_s: float = 30) -> str:
        incident = f"{tag}-{uuid.uuid4().hex[:12]}"
        event = {"id": incident, "started_at": 1_700_000_000, "services": ["api"]}
        with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
            publisher.publish(event)
        wait_until(
            lambda: standin.requests_for(incident), timeout_s=timeout_s, what=f"{incident} sent"
        )
        return incident

    return deliver


@pytest.fixture
def run_process(
    tmp_path: Path, redis_url: str, prefix: str, standin: StandinServer, api_key: str
) -> Iterator[Callable[..., RunProcess]]:
    """Start ``dora-forwarder run`` (``--loglevel=INFO``; later options win), logging to
    ``tmp_path / "run.log"``: ``run_process(*run_args, **env)``; stopped after the test."""
    started: list[RunProcess] = []

    def start(*args: str, **env: str) -> RunProcess:
        process = RunProcess(
            ["--loglevel=INFO", *args],
            worker_env(redis_url, prefix, standin.url, api_key, **env),
            tmp_path / "run.log",
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each test's call report where its fixtures can see whether it failed."""
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report
