"""The Publisher with a spool, against a redis-server of its own that the tests stop and start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from forwarder import InvalidEventError, Publisher, PublishError, SpoolFullError
from forwarder._published import DEFAULT_SPOOL_MAX_BYTES
from forwarder._spool import Spool
from forwarder.protocol import RedisKeys
from harness.stack import RedisServer, Worker, wait_until, worker_env
from harness.standin import StandinServer
from tests.forwarder.spool_producer import incident_id

REPO = Path(__file__).resolve().parents[2]
PREFIX = "spooltest"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, on a free port, with AOF fsync always."""
    own = RedisServer().start()
    yield own
    own.stop()


def stream_events(url: str) -> list[dict[str, object]]:
    """Every event in the test's stream, in stream order."""
    client = redis.Redis.from_url(url)
    try:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
            RedisKeys(PREFIX).ingest
        )  # redis-py's stubs type every reply as optional
    finally:
        client.close()
    return [json.loads(fields[b"event"]) for _, fields in entries]


def stream_length(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.xlen(RedisKeys(PREFIX).ingest))
    finally:
        client.close()


def start(number: int) -> dict[str, object]:
    return {"id": incident_id(number), "services": ["checkout"], "started_at": 1_700_000_000}


def test_an_outage_is_spooled_then_drained_in_order(server: RedisServer, tmp_path: Path) -> None:
    """Redis down: publishes return spooled ids; back up: the drainer sends all, in order."""
    with Publisher.from_url(
        server.url, key_prefix=PREFIX, timeout_s=0.5, spool_dir=tmp_path
    ) as publisher:
        first = publisher.publish(start(0))
        assert first == incident_id(0)
        assert first.spooled is False
        server.crash()
        spooled = [publisher.publish(start(number)) for number in range(1, 101)]
        assert all(item.spooled for item in spooled)
        many = publisher.publish_many([start(number) for number in range(101, 111)])
        assert [item.spooled for item in many] == [True] * 10
        assert publisher.spooled == 110
        with pytest.raises(InvalidEventError):  # a bad event is refused, never spooled
            publisher.publish({"id": "short"})
        server.start()
        wait_until(lambda: publisher.spooled == 0, timeout_s=15, what="the spool to drain")
        after = publisher.publish(start(111))
        wait_until(lambda: stream_length(server.url) == 112, what="112 entries")
    assert after.spooled is False
    assert [event["id"] for event in stream_events(server.url)] == [
        incident_id(number) for number in range(112)
    ]


def test_new_events_wait_behind_the_spool(server: RedisServer, tmp_path: Path) -> None:
    """A publisher finding a spool left by another run sends its events after it, not before."""
    server.crash()
    with Publisher.from_url(server.url, key_prefix=PREFIX, spool_dir=tmp_path) as publisher:
        for number in range(50):
            publisher.publish(start(number))
    server.start()
    with Publisher.from_url(server.url, key_prefix=PREFIX, spool_dir=tmp_path) as publisher:
        for number in range(50, 60):
            publisher.publish(start(number))
        wait_until(lambda: publisher.spooled == 0, what="the spool to drain")
    ids = [event["id"] for event in stream_events(server.url)]
    assert ids == [incident_id(number) for number in range(60)]


def test_a_full_spool_raises_a_clear_error(server: RedisServer, tmp_path: Path) -> None:
    """Redis away and no room left: SpoolFullError (a PublishError) naming the bound."""
    server.crash()
    with Publisher.from_url(
        server.url, key_prefix=PREFIX, spool_dir=tmp_path, spool_max_bytes=2_000
    ) as publisher:
        accepted = 0
        failure: PublishError | None = None
        for number in range(100):
            try:
                publisher.publish(start(number))
            except PublishError as exc:
                failure = exc
                break
            accepted += 1
        assert isinstance(failure, SpoolFullError)
        assert "is full" in str(failure)
        assert "spool_max_bytes" in str(failure)
        assert 0 < accepted < 100
        assert publisher.spooled == accepted


def test_close_does_not_hang_while_redis_is_away(server: RedisServer, tmp_path: Path) -> None:
    """The drainer backs off against a dead Redis, and close() stops it promptly."""
    server.crash()
    publisher = Publisher.from_url(server.url, key_prefix=PREFIX, spool_dir=tmp_path)
    publisher.publish(start(1))
    began = time.monotonic()
    publisher.close()
    assert time.monotonic() - began < 3.5  # bounded by twice the Redis timeout, plus one


def test_without_a_spool_an_outage_still_raises(server: RedisServer) -> None:
    """No spool_dir: a PublishError, as before."""
    server.crash()
    with (
        Publisher.from_url(server.url, key_prefix=PREFIX) as publisher,
        pytest.raises(PublishError),
    ):
        publisher.publish(start(1))


class Producer:
    """A producer subprocess (tests/forwarder/spool_producer.py) the test can pause and kill."""

    def __init__(self, url: str, spool_dir: Path, first: int, last: int, pause: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.forwarder.spool_producer",
                url,
                PREFIX,
                str(spool_dir),
                str(first),
                str(last),
                str(pause),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.acknowledged = first - 1

    def read_until(self, word: str) -> str:
        """Lines up to the first starting with ``word`` (fails if the process ends first)."""
        assert self.process.stdout is not None
        while line := self.process.stdout.readline():
            if line.startswith("ok "):
                self.acknowledged = int(line.split()[1])
            if line.startswith(word):
                return line
        raise AssertionError(f"producer ended (code {self.process.wait()}) before {word!r}")

    def read_rest(self) -> None:
        """What it printed before it ended."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("ok "):
                self.acknowledged = int(line.split()[1])

    def close(self) -> None:
        """Kill it if it still runs; close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def go_on(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()


def test_a_killed_producer_and_a_stopped_redis_lose_nothing(
    server: RedisServer, tmp_path: Path, standin: StandinServer, api_key: str
) -> None:
    """1,000 incidents (a start and a finish each): Redis SIGKILLed after 200, the producer
    SIGKILLed mid-way through the outage and restarted, Redis back after 700. Every incident
    reaches the stream, each one's start before its finish, and a real worker delivers all
    1,000, finished."""
    spool_dir = tmp_path / "spool"
    producer = Producer(server.url, spool_dir, 0, 1_000, pause=200)
    try:
        producer.read_until("paused")
        server.crash()
        producer.go_on()
        producer.read_until("ok 450")  # well into the outage, publishing into the spool
        producer.process.send_signal(signal.SIGKILL)
        producer.process.wait(10)
        producer.read_rest()
    finally:
        producer.close()
    left = Spool(spool_dir, DEFAULT_SPOOL_MAX_BYTES)
    waiting = left.waiting()
    left.close()
    assert waiting >= 2 * (450 - 200)  # what the killed producer spooled is still there
    resumed = Producer(server.url, spool_dir, producer.acknowledged + 1, 1_000, pause=700)
    try:
        resumed.read_until("paused")
        server.start()
        resumed.go_on()
        resumed.read_until("drained")
        assert resumed.process.wait(30) == 0
    finally:
        resumed.close()

    events = stream_events(server.url)
    starts: dict[str, int] = {}
    finishes: dict[str, int] = {}
    for position, event in enumerate(events):
        which = finishes if "finished_at" in event else starts
        which.setdefault(str(event["id"]), position)
        if which is starts:
            starts[str(event["id"])] = position  # the last start
    expected = {incident_id(number) for number in range(1_000)}
    assert set(starts) == expected
    assert set(finishes) == expected
    late = [name for name in expected if starts[name] > finishes[name]]
    assert not late, f"{len(late)} incidents finished before they started, e.g. {late[:3]}"

    worker = Worker(
        ["worker", "--beat", "--concurrency=1"],
        worker_env(server.url, PREFIX, standin.url, api_key),
        tmp_path / "worker.log",
        tmp_path,
    )
    try:

        def all_finished() -> bool:
            held = standin.latest()
            return all("finished_at" in held.get(name, {}) for name in expected)

        wait_until(all_finished, timeout_s=90, what="the worker to deliver all 1,000, finished")
    finally:
        worker.stop()
