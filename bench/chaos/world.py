"""A chaos scenario's world: Redis prefix, stand-in API, workers, publisher; and its figures."""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from forwarder import Publisher
from forwarder.protocol import RedisKeys
from harness.stack import Workers, delete_keys, judge
from harness.standin import StandinServer

NS = 1_000_000_000


@dataclass
class Row:
    """One scenario's figures."""

    scenario: str
    published: int
    delivered: int
    lost: int
    duplicate_requests: int
    rate_limited_429s: int
    drain_s: float
    note: str = ""
    facts: dict[str, float] = field(default_factory=dict)
    """The scenario's own measurements, for tests to assert on."""


@dataclass
class Stack:
    """One scenario's world: a key prefix, the stand-in, workers, a publisher."""

    redis_url: str
    prefix: str
    standin: StandinServer
    workers: Workers
    publisher: Publisher

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.prefix)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)


@contextmanager
def stack(redis_url: str, api_key: str | None = None) -> Iterator[Stack]:
    """Set up a scenario's world, and tear all of it down (processes, keys) afterwards."""
    prefix = f"chaos-{uuid.uuid4().hex[:10]}"
    key = api_key or f"chaos-key-{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory() as tmp, StandinServer(key) as standin:
        workers = Workers(redis_url, prefix, standin.url, key, Path(tmp))
        publisher = Publisher.from_url(redis_url, key_prefix=prefix)
        world = Stack(redis_url, prefix, standin, workers, publisher)
        try:
            yield world
        finally:
            workers.stop_all()
            leaked = key in workers.logs()
            publisher.close()
            _delete_prefix(redis_url, prefix)
            if leaked:
                raise AssertionError("the API key appeared in a worker's log")


def _delete_prefix(redis_url: str, prefix: str) -> None:
    # A scenario that failed mid-crash may leave its Redis down: nothing to clean then.
    with contextlib.suppress(redis.RedisError):
        delete_keys(redis_url, "{" + prefix + "}*")


def incidents(count: int, tag: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Start and finish events for ``count`` incidents, and each one's expected final state."""
    events: list[dict[str, Any]] = []
    expected: dict[str, dict[str, Any]] = {}
    for i in range(count):
        incident = f"{tag}-{i:012d}"
        start = {
            "id": incident,
            "started_at": 1_700_000_000 + i,
            "services": ["api"],
            "env": "prod",
        }
        events.append(start)
        events.append({"id": incident, "finished_at": 1_700_000_600 + i})
        expected[incident] = {
            **start,
            "started_at": (1_700_000_000 + i) * NS,
            "finished_at": (1_700_000_600 + i) * NS,
        }
    return events, expected


def publish_all(publisher: Publisher, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 500):
        publisher.publish_many(events[start : start + 500])


def drained(world: Stack, expected: dict[str, dict[str, Any]]) -> Callable[[], bool]:
    def check() -> bool:
        latest = world.standin.latest()
        return all(latest.get(i) == state for i, state in expected.items())

    return check


def row(
    name: str,
    world: Stack,
    expected: dict[str, dict[str, Any]],
    started: float,
    note: str = "",
    **facts: float,
) -> Row:
    received = judge(world.standin, expected)
    return Row(
        name,
        len(expected),
        received.delivered,
        len(received.lost),
        received.duplicates,
        received.rate_limited,
        round(time.monotonic() - started, 1),
        note,
        facts,
    )
