"""Shared fixtures: a real Redis (DB 15, a key prefix per test), fakeredis, waiting helpers.

Tests never flush a database: each one works under its own key prefix and deletes exactly
its keys afterwards, so runs can share a Redis with anything else.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from forwarder.protocol import RedisKeys

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def wait_until(
    condition: Callable[[], Any], *, timeout_s: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


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
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match="{" + name + "}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


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

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.standin import StandinServer  # noqa: E402


@pytest.fixture
def api_key() -> str:
    """A key of this test's own, so that a leak of it into any output can be searched for."""
    return f"test-key-{uuid.uuid4().hex}"


@pytest.fixture
def standin(api_key: str) -> Iterator[StandinServer]:
    """The local stand-in of Datadog's DORA API, accepting ``api_key``."""
    with StandinServer(api_key) as server:
        yield server


class WorkerProcess:
    """A real ``celery -A workers worker`` process and its log."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig``; wait for the exit (SIGKILL after ``timeout_s``); return the code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def worker_env(
    redis_url: str, prefix: str, api_url: str, api_key: str | None, **extra: str
) -> dict[str, str]:
    """The environment of a worker process for one test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORWARDER_", "DD_"))}
    env.update(
        FORWARDER_REDIS_URL=redis_url,
        FORWARDER_KEY_PREFIX=prefix,
        FORWARDER_API_URL=api_url,
        FORWARDER_TASK_BUDGET_S="2",
        FORWARDER_TICK_S="0.5",
        FORWARDER_BACKOFF_BASE_S="0.05",
        FORWARDER_BACKOFF_MAX_S="0.2",
        FORWARDER_HTTP_TIMEOUT_S="5",
        FORWARDER_LEASE_S="20",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    if api_key is not None:
        env["DD_API_KEY"] = api_key
    env.update(extra)
    return env


@pytest.fixture
def start_worker(
    redis_url: str,
    prefix: str,
    standin: StandinServer,
    api_key: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes (embedded beat by default); stopped after the test.

    After the test every worker's log is checked for the API key, and shown on failure.
    """
    started: list[WorkerProcess] = []

    def start(*args: str, key: str | None = api_key, **env: str) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        argv = list(args) or ["worker", "--beat", "--concurrency=2"]
        command = [sys.executable, "-m", "celery", "-A", "workers", *argv, "--loglevel=INFO"]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env=worker_env(redis_url, prefix, standin.url, key, **env),
                start_new_session=True,
            )
        worker = WorkerProcess(process, log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    for worker in started:
        text = worker.log()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(f"--- {worker.log_path.name} ---\n{text[-6000:]}")
        assert api_key not in text, "the API key appeared in a worker's log"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
