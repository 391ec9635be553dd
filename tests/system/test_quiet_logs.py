"""Quiet by default (issue 16): an idle forwarder writes nothing at INFO.

``dora-forwarder run`` at ``--loglevel=INFO``, as a new user starts it: one line when it is
ready, one per delivery outcome, one when it stops, and nothing while it idles, however many
ticks beat sends and pump runs end. The routine lines are still there at DEBUG.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from forwarder.protocol import RedisKeys, StatsField
from harness.run import RunProcess
from harness.stack import Worker, wait_until
from workers.tasks import QUEUE

pytestmark = pytest.mark.integration

FAST = {"FORWARDER_TICK_S": "0.5", "FORWARDER_TASK_BUDGET_S": "2"}
"""Ten times the default ticks and more pump runs than the defaults give in a minute."""
IDLE_TICKS = 12
"""Beat's ticks in an idle minute at the default FORWARDER_TICK_S (5 s)."""
LOG_LINE = re.compile(r"^\[[\d :,-]+: (?P<level>[A-Z]+)/[^\]]+\] (?P<message>.*)$")


def _lines(log: Path) -> list[tuple[str, str]]:
    """(level, message) of each of Celery's log lines in ``log``."""
    return [
        (found["level"], found["message"])
        for line in log.read_text().splitlines()
        if (found := LOG_LINE.match(line))
    ]


def _ticks_dropped(client: redis.Redis, prefix: str) -> int:
    return int(client.hget(RedisKeys(prefix).stats, StatsField.TICKS_DROPPED) or 0)


def _idle_through_ticks(redis_url: str, prefix: str, ticks: int) -> None:
    """Wait until beat has sent ``ticks`` more ticks that a busy pump dropped (each is a
    task received and ended: Celery's routine lines), and pump runs have come and gone."""
    client = redis.Redis.from_url(redis_url)
    try:
        start = _ticks_dropped(client, prefix)
        wait_until(
            lambda: _ticks_dropped(client, prefix) >= start + ticks,
            timeout_s=60,
            what=f"{ticks} ticks of an idle forwarder",
        )
    finally:
        client.close()


def test_an_idle_run_writes_nothing_at_info(
    run_process: Callable[..., RunProcess],
    deliver_one: Callable[..., str],
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """Ready, one delivery, then more than an idle minute's ticks: not one line; stop: one."""
    run = run_process(**FAST)
    incident = deliver_one("quiet")
    log = tmp_path / "run.log"
    wait_until(lambda: incident in log.read_text(), timeout_s=10, what="the delivery's line")
    _idle_through_ticks(redis_url, prefix, 2 * IDLE_TICKS)
    assert run.stop() == 0
    lines = _lines(log)
    # Start: warnings about this test's Redis may come first; then one INFO line.
    info = [message for level, message in lines if level == "INFO"]
    assert len(info) == 3, info
    assert info[0].endswith(" ready.")
    assert info[1].startswith(f"delivered incident={incident} status=202")
    assert info[2].endswith(" stopped.")
    assert [m for level, m in lines if level not in ("INFO", "WARNING")] == []


def test_at_debug_the_routine_lines_are_all_there(
    run_process: Callable[..., RunProcess],
    deliver_one: Callable[..., str],
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """Moved, not dropped: beat's ticks and each pump run's summary, at DEBUG."""
    run_process("--loglevel=DEBUG", **FAST)
    deliver_one("quiet")
    _idle_through_ticks(redis_url, prefix, 2)
    messages = [message for level, message in _lines(tmp_path / "run.log") if level == "DEBUG"]
    assert any(m.startswith("Scheduler: Sending due task pump") for m in messages)
    assert any(re.match(r"Task dora\.pump\[[^\]]+\] succeeded in ", m) for m in messages)
    assert any("tick(s) dropped so far by the fleet" in m for m in messages)


def test_a_beat_of_its_own_says_when_it_starts_and_stops(
    start_worker: Callable[..., Worker], sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """`celery beat` (compose's, systemd's, Kubernetes' beat) has no worker lines: one line
    when it starts, one when it stops, and its ticks only at DEBUG."""
    beat = start_worker("beat", FORWARDER_TICK_S="0.5")
    # Its first tick in the queue (no worker takes it): beat is past its start-up, whose
    # "Starting..." line comes a moment before the hook that prepares the stop line.
    wait_until(
        lambda: sync_redis.llen(f"{keys.celery_prefix}{QUEUE}") > 0,
        timeout_s=30,
        what="beat's first tick",
    )
    assert beat.stop() == 0
    info = [m for level, m in _lines(beat.log_path) if level == "INFO"]
    assert info == ["beat: Starting...", "beat: stopped."], info
