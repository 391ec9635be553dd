"""One clock, Redis': a beat on a host whose clock is behind still drives the workers (I9).

Ticks are dated by Redis ``TIME`` when sent and judged by it when run, so hosts' clocks never
have to agree; a backlog of stale ticks is dropped (and counted), not run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from config import load_settings
from forwarder import Publisher
from forwarder.protocol import RedisKeys, StatsField
from harness.stack import Workers, wait_until
from harness.standin import StandinServer
from workers.celery_app import create_app
from workers.tasks import PUMP_TASK, TICK_EXPIRES_S, TICK_SENT_HEADER, ForwarderCelery

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SKEW_S = 10.0
"""How far behind the workers the sender's clock is: the figure of the defect report."""

FAKETIME = shutil.which("faketime")


def _publish_one(redis_url: str, prefix: str, name: str) -> str:
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        return publisher.incident_started(team="ops", id=f"incident-{name}")


@pytest.fixture
def sender_app(redis_url: str, prefix: str) -> Iterator[ForwarderCelery]:
    """This process as a Celery client of the test's deployment (it sends ticks)."""
    app = create_app(load_settings(redis_url=redis_url, key_prefix=prefix, metrics_port=0))
    yield app
    app.close()


@pytest.mark.skipif(FAKETIME is None, reason="needs libfaketime (Debian package: faketime)")
def test_a_beat_10_s_behind_the_workers_still_drives_them(
    workers: Workers, standin: StandinServer, redis_url: str, prefix: str
) -> None:
    """A real `celery beat` whose host clock is 10 s behind: the workers still deliver."""
    assert FAKETIME is not None
    wrapper = (FAKETIME, "-f", f"-{SKEW_S:g}s")
    # The skew is real: a process under the wrapper sees the wall clock 10 s behind.
    seen = subprocess.run(
        [*wrapper, sys.executable, "-c", "import time; print(time.time())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(seen.stdout) - time.time() == pytest.approx(-SKEW_S, abs=1.0)
    workers.start("worker", "--concurrency=1", "--no-start-pumps")  # only the skewed beat ticks
    # Its monotonic clock moves by the same offset: Python's sleeps need the two to agree.
    workers.start("beat", wrapper=wrapper)
    incident = _publish_one(redis_url, prefix, "skewed-beat-000001")
    wait_until(lambda: incident in standin.latest(), timeout_s=45, what="delivery")


def test_ticks_sent_on_a_clock_10_s_behind_are_run(
    workers: Workers,
    standin: StandinServer,
    redis_url: str,
    prefix: str,
    sender_app: ForwarderCelery,
) -> None:
    """Beat's own ticks, sent by an app whose clock is 10 s behind: a real worker runs them."""
    real_now = sender_app.now
    sender_app.now = lambda: real_now() - timedelta(seconds=SKEW_S)  # type: ignore[method-assign]
    entry = sender_app.conf.beat_schedule["pump"]
    workers.start("worker", "--concurrency=1", "--no-start-pumps")  # this test ticks
    incident = _publish_one(redis_url, prefix, "skewed-sender-01")
    last_tick = [0.0]

    def delivered_after_ticking() -> bool:
        # What beat does at each tick, at most every half second.
        if time.monotonic() - last_tick[0] >= 0.5:
            sender_app.send_task(entry["task"], **entry.get("options", {}))
            last_tick[0] = time.monotonic()
        return incident in standin.latest()

    wait_until(delivered_after_ticking, timeout_s=45, what="delivery")


def test_a_backlog_of_stale_ticks_is_dropped_counted_and_not_run(
    workers: Workers,
    redis_url: str,
    keys: RedisKeys,
    sync_redis: redis.Redis,
    sender_app: ForwarderCelery,
) -> None:
    """Ticks that waited past the expiry (Redis clock) are dropped and counted; a line each,
    at DEBUG (routine: at INFO an idle forwarder is quiet)."""
    seconds, micros = sync_redis.time()
    long_ago_ms = int(seconds) * 1000 + int(micros) // 1000 - int(3 * TICK_EXPIRES_S * 1000)
    stale = 30
    for _ in range(stale):
        sender_app.send_task(PUMP_TASK, headers={TICK_SENT_HEADER: long_ago_ms})
    worker = workers.start("worker", "--concurrency=1", "--no-start-pumps", loglevel="DEBUG")

    def dropped() -> int:
        return int(sync_redis.hget(keys.stats, StatsField.TICKS_DROPPED) or 0)

    wait_until(lambda: dropped() == stale, timeout_s=30, what=f"{stale} ticks dropped")
    # Not one pump ran: a running pump reports itself alive at once.
    assert sync_redis.zcard(keys.workers) == 0
    wait_until(
        lambda: worker.log().count("tick(s) dropped") == stale,
        timeout_s=10,
        what="a DEBUG line per dropped tick",
    )
    # A fresh tick still runs a pump.
    sender_app.send_task(PUMP_TASK)
    wait_until(lambda: sync_redis.zcard(keys.workers) == 1, timeout_s=30, what="a pump run")
    assert dropped() == stale
