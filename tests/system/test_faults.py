"""Lose nothing under faults: the chaos scenarios, smaller, with their guarantees asserted.

Real worker processes, real Redis (a server of its own with AOF for the restart), and the
local stand-in API. Each scenario is bounded in time.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import redis

from bench import chaos
from forwarder import Publisher
from forwarder.protocol import RedisKeys
from harness.stack import Workers, wait_until
from harness.standin import StandinServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def assert_operations_kept(result: chaos.Row) -> None:
    """The mixed workload's PATCHes and DELETEs: each deployment's POST before its PATCH,
    nothing POSTed again after its DELETE (deleted ids absent: counted in ``lost``)."""
    assert result.facts["deployments"] > 0
    assert result.facts["deleted"] > 0
    assert result.facts["patch_before_post"] == 0
    assert result.facts["resurrections"] == 0


def test_sigkill_during_delivery_loses_nothing(redis_url: str) -> None:
    """Workers SIGKILLed mid-delivery: every final state exact, few duplicates."""
    result = chaos.sigkill(redis_url, count=1000, kills=2)
    assert result.lost == 0
    assert result.delivered == result.published == 1100  # 1000 incidents, 100 deployments
    assert result.duplicate_requests <= result.facts["duplicate_bound"]
    assert_operations_kept(result)


def test_redis_crash_loses_nothing_acknowledged() -> None:
    """Redis SIGKILLed and restarted (AOF): every acknowledged publish arrives, no restarts."""
    result = chaos.redis_restart(count=600)
    assert result.lost == 0
    assert result.delivered == result.published == 660
    assert_operations_kept(result)


def test_api_outage_holds_the_backlog_in_redis(redis_url: str) -> None:
    """503s for a while: everything arrives after; claims stay bounded, memory flat."""
    result = chaos.outage(redis_url, count=300, outage_s=3.0)
    assert result.lost == 0
    assert_operations_kept(result)
    assert result.facts["in_flight_max"] <= 2 * 128  # two pool processes x FORWARDER_MAX_IN_FLIGHT
    assert result.facts["rss_growth_mb"] < 20


def test_fleet_under_rate_limit_sees_at_most_one_429_per_window(redis_url: str) -> None:
    """Datadog's limit with its headers, several workers: <= one 429 a window, all arrive."""
    result = chaos.rate_limited(redis_url, count=150, limit=50, period_s=2, workers=2)
    assert result.lost == 0
    assert_operations_kept(result)
    assert result.facts["max_429_per_window"] <= 1
    assert result.facts["max_accepted_per_window"] <= 50


def test_refused_key_then_right_key_loses_nothing(redis_url: str) -> None:
    """403s for a while, then the right API key with a wrong application key (POSTs go,
    PATCH and DELETE wait), then both right: nothing dead-lettered, everything arrives."""
    result = chaos.auth_then_fixed(redis_url, count=100, bad_for_s=3.0)
    assert result.lost == 0
    assert result.facts["dead_letters"] == 0
    # One probe per auth pause (1 s here), not one request per event.
    assert result.facts["refused"] <= 6
    assert result.facts["error_lines"] <= 6
    # Every POST while the application key was wrong; no PATCH or DELETE applied then.
    assert result.facts["app_key_posts"] >= result.published - result.facts["deleted"]
    assert result.facts["app_key_refused"] >= 1
    assert result.facts["app_key_applied"] == 0
    assert_operations_kept(result)


def test_garbage_is_dead_lettered_and_a_fixed_letter_replays(redis_url: str) -> None:
    """Bad entries become dead letters with reasons; good ones arrive; a replay delivers."""
    result = chaos.garbage(redis_url, count=200, bad=20)
    assert result.lost == 0
    assert result.facts["dead_letters"] == 20


def test_old_state_applied_late_is_followed_by_the_current_one(redis_url: str) -> None:
    """Starts applied by the API after their finish: Datadog still ends with the finish."""
    result = chaos.late_apply(redis_url, count=20)
    assert result.facts["regressed"] > 0  # the API did apply the old states last
    assert result.lost == 0
    # Start (held), finish, finish again: 3 each. A loaded machine may time out a few more
    # requests, each followed by one resend; never a resend loop.
    assert result.facts["accepted_requests"] <= 4 * 20


def test_outage_after_learning_limits_gets_probes_not_a_storm(redis_url: str) -> None:
    """30 s-style outage, limits known: <= 0.3 requests per waiting incident, all out in 60 s."""
    result = chaos.outage_after_learning(redis_url, count=300, outage_s=8.0, drain_timeout_s=60)
    assert result.lost == 0
    assert_operations_kept(result)
    assert result.facts["requests_per_incident"] <= 0.3
    assert result.facts["recovery_s"] <= 60
    assert result.facts["waiting_at_60_s"] == 0


def test_warm_shutdown_releases_claims_at_once(
    redis_url: str,
    prefix: str,
    standin: StandinServer,
    api_key: str,
    tmp_path: Path,
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """SIGTERM with requests hanging: claims are given back at once, and another delivers."""
    standin.latency_s = 8.0
    workers = Workers(redis_url, prefix, standin.url, api_key, tmp_path)
    sync_redis.hset(keys.gate, "unlimited_ms", 10**15)  # no probing: send all at once
    try:
        first = workers.start(FORWARDER_HTTP_TIMEOUT_S="20", FORWARDER_LEASE_S="60")
        with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
            ids = [
                publisher.incident_started(team="ops", id=f"incident-term-{i:06d}")
                for i in range(10)
            ]
        wait_until(
            lambda: sync_redis.zcard(keys.inflight) == 10, timeout_s=20, what="10 claims in flight"
        )
        first.process.send_signal(signal.SIGTERM)
        # Released long before the 8 s answers or the 60 s lease.
        wait_until(
            lambda: sync_redis.zcard(keys.inflight) == 0, timeout_s=5, what="claims released"
        )
        assert first.process.wait(15) == 0
        released = re.findall(r"released (\d+) claim\(s\) at shutdown", first.log())
        assert sum(int(n) for n in released) == 10
        # A clean stop: no pool process killed under its task, nothing reported as lost.
        assert "WorkerLostError" not in first.log()
        assert "exited with" not in first.log()
        standin.latency_s = 0.0
        workers.start()
        wait_until(
            lambda: all(i in standin.latest() for i in ids),
            timeout_s=30,
            what="delivery by the next worker",
        )
    finally:
        workers.stop_all()
        assert api_key not in workers.logs()
