"""Start-up checks of the Redis a worker is given: refuse what cannot work, warn of risk.

Each judgment is a function of its own, so that ``doctor`` can show them one by one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

MIN_REDIS: Final = (6, 2)
"""XAUTOCLAIM (crash recovery) and ZADD LT arrived in Redis 6.2."""


@dataclass(frozen=True, slots=True)
class Findings:
    """Problems that stop a worker, and risks it only warns about."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def version_problem(info: Mapping[str, Any]) -> str | None:
    """Why this Redis is too old for the forwarder, or None."""
    version = str(info.get("redis_version", "0"))
    if _version(version) < MIN_REDIS:
        return f"Redis {version} is too old: dora-forwarder needs 6.2 or newer (XAUTOCLAIM)"
    return None


def eviction_problem(info: Mapping[str, Any]) -> str | None:
    """Why this Redis may drop queued events under memory pressure, or None."""
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        return (
            f"Redis maxmemory-policy is {policy!r}: under memory pressure it may evict "
            "queued events; set maxmemory-policy noeviction"
        )
    return None


def persistence_problem(info: Mapping[str, Any], save: str) -> str | None:
    """Why a restart of this Redis loses every queued event (nothing on disk), or None."""
    if not int(info.get("aof_enabled", 0)) and not save.strip():
        return (
            "Redis keeps nothing on disk (no AOF, no snapshots): a Redis restart loses every "
            "queued event; enable appendonly yes"
        )
    return None


def judge_redis(info: Mapping[str, Any], save: str) -> Findings:
    """Judge ``INFO`` output and ``CONFIG GET save`` (empty when snapshots are off)."""
    findings = Findings()
    if problem := version_problem(info):
        findings.errors.append(problem)
    for warning in (eviction_problem(info), persistence_problem(info, save)):
        if warning:
            findings.warnings.append(warning)
    return findings
