"""Start-up judgement of the Redis a worker is pointed at."""

from __future__ import annotations

from workers.ops.preflight import judge_redis

GOOD = {"redis_version": "7.0.15", "maxmemory_policy": "noeviction", "aof_enabled": 1}


def test_durable_redis_passes() -> None:
    """AOF and noeviction on a recent Redis: nothing to say."""
    findings = judge_redis(GOOD, "")
    assert (findings.errors, findings.warnings) == ([], [])


def test_old_redis_is_refused() -> None:
    """Below 6.2 there is no XAUTOCLAIM: the worker must not start."""
    findings = judge_redis({**GOOD, "redis_version": "6.0.9"}, "")
    assert findings.errors == [
        "Redis 6.0.9 is too old: dora-forwarder needs 6.2 or newer (XAUTOCLAIM)"
    ]
    assert judge_redis({**GOOD, "redis_version": "6.2.0"}, "").errors == []


def test_eviction_and_no_persistence_are_warned() -> None:
    """Evicting or memory-only Redis loses events: say so, with the setting to change."""
    findings = judge_redis({**GOOD, "maxmemory_policy": "allkeys-lru", "aof_enabled": 0}, "")
    assert any("allkeys-lru" in w and "noeviction" in w for w in findings.warnings)
    assert any("appendonly yes" in w for w in findings.warnings)
    assert judge_redis({**GOOD, "aof_enabled": 0}, "3600 1").warnings == []
