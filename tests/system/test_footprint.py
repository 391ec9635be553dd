"""The cheap-to-run design seen from outside (issue 15): what a user relies on, not timings.

- ``dora-forwarder run`` is one process: a threads pool and beat as a thread, delivering.
- A worker starts a pump in every pool process at once, not one per ``FORWARDER_TICK_S``.
- A warm shutdown reaches an idle pump through the stop flag's pipe, without polling.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from bench.footprint import group_members
from config import load_settings
from forwarder import Publisher
from forwarder.protocol import RedisKeys
from harness.run import RunProcess
from harness.stack import Worker, wait_until
from harness.standin import StandinServer
from workers.delivery.pump import HEARTBEAT_EVERY_S
from workers.ops.status import PUMP_HEARTBEAT_S, live_window_ms

pytestmark = pytest.mark.integration

LONG_TICK_S = "60"
"""Beat's first tick comes a whole interval after start: anything sooner is a start-up tick."""


def _incident(tag: str) -> dict[str, object]:
    return {
        "id": f"footprint-{tag}-{uuid.uuid4().hex[:12]}",
        "started_at": 1_700_000_000,
        "services": ["api"],
    }


def test_run_is_one_process_with_beat_inside(
    run_process: Callable[..., RunProcess],
    deliver_one: Callable[..., str],
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """One process delivers (start-up tick), beat ticks from inside it, SIGTERM ends it."""
    # Beat's lines about its ticks are at DEBUG (an idle forwarder is quiet at INFO).
    run = run_process("--loglevel=DEBUG", FORWARDER_TICK_S="0.5", FORWARDER_TASK_BUDGET_S="1")
    deliver_one("footprint-run")
    assert group_members(run.process.pid) == [run.process.pid], "run forks no process"
    log = tmp_path / "run.log"
    wait_until(
        lambda: log.read_text().count("Sending due task pump") >= 3,
        timeout_s=15,
        what="beat's thread sending ticks",
    )
    assert group_members(run.process.pid) == [run.process.pid]
    assert run.stop() == 0
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.zcard(RedisKeys(prefix).inflight) == 0, "nothing left claimed"
    finally:
        client.close()
    assert "Traceback" not in log.read_text()


def test_run_delivers_before_beats_first_tick(
    run_process: Callable[..., RunProcess], deliver_one: Callable[..., str]
) -> None:
    """With a 60 s tick, the first event still goes out at once: run queues its first pump."""
    run_process(FORWARDER_TICK_S=LONG_TICK_S, FORWARDER_TASK_BUDGET_S="30")
    deliver_one("footprint-first", timeout_s=20)


def test_every_pool_process_pumps_from_the_start(
    start_worker: Callable[..., Worker], redis_url: str, prefix: str
) -> None:
    """Two pool processes, a 60 s tick: both report as live workers within seconds."""
    start_worker(
        "worker",
        "--beat",
        "--concurrency=2",
        FORWARDER_TICK_S=LONG_TICK_S,
        FORWARDER_TASK_BUDGET_S="30",
    )
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(
            lambda: client.zcard(RedisKeys(prefix).workers) == 2,
            timeout_s=20,
            what="a pump in each of the 2 pool processes",
        )
    finally:
        client.close()


def test_run_with_two_pumps_names_them_apart(
    run_process: Callable[..., RunProcess], standin: StandinServer, redis_url: str, prefix: str
) -> None:
    """``run --concurrency 2``: two pumps, threads of one process, two consumers in the group."""
    run = run_process("--concurrency=2", FORWARDER_TICK_S="0.5", FORWARDER_TASK_BUDGET_S="1")
    client = redis.Redis.from_url(redis_url)
    try:
        live = wait_until(
            lambda: (
                (names := client.zrange(RedisKeys(prefix).workers, 0, -1))
                and len(names) == 2
                and names
            ),
            timeout_s=20,
            what="both pumps reporting",
        )
    finally:
        client.close()
    pid = run.process.pid
    assert sorted(name.decode().rsplit(":", 1)[1] for name in live) == [f"{pid}", f"{pid}-2"]
    events = [_incident(f"two-{n}") for n in range(20)]
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        publisher.publish_many(events)
    wait_until(
        lambda: all(standin.requests_for(str(e["id"])) for e in events),
        timeout_s=30,
        what="every event delivered",
    )
    assert group_members(pid) == [pid]


def test_status_knows_how_often_a_pump_reports() -> None:
    """``status`` judges liveness by the pump's heartbeat without importing the pump."""
    assert PUMP_HEARTBEAT_S == HEARTBEAT_EVERY_S
    settings = load_settings(http_timeout_s=10)
    # The last heartbeat of a run, then its last answers (up to the timeout), then the next.
    assert live_window_ms(settings) >= (2 * HEARTBEAT_EVERY_S + 10) * 1000


def test_sigterm_gives_runs_claims_back_at_once(
    run_process: Callable[..., RunProcess],
    standin: StandinServer,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """A 30 s run holding requests the API answers in 20 s: SIGTERM ends it within seconds,
    its claims given back due (the stop pipe woke the pump thread)."""
    standin.latency_s = 20.0
    run = run_process(
        FORWARDER_TASK_BUDGET_S="30", FORWARDER_HTTP_TIMEOUT_S="25", FORWARDER_LEASE_S="60"
    )
    events = [_incident(f"held-{n}") for n in range(3)]
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        publisher.publish_many(events)
    keys = RedisKeys(prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        # Until an answer tells the limits, one request probes: one is in flight.
        held = wait_until(lambda: client.zcard(keys.inflight), timeout_s=20, what="a request")
        stopped = time.monotonic()
        assert run.stop() == 0
        assert time.monotonic() - stopped < 10, "released at once, not after the answers"
        assert client.zcard(keys.inflight) == 0, "every claim given back"
        assert client.zcard(keys.due) == 3, "due again, for the next worker"
    finally:
        client.close()
    log = (tmp_path / "run.log").read_text()
    assert f"released {held} claim(s) at shutdown" in log
