"""Start-up checks of the Redis a worker is given: refuse what cannot work, warn of risk."""

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


def judge_redis(info: Mapping[str, Any], save: str) -> Findings:
    """Judge ``INFO`` output and ``CONFIG GET save`` (empty when snapshots are off)."""
    findings = Findings()
    version = str(info.get("redis_version", "0"))
    if _version(version) < MIN_REDIS:
        findings.errors.append(
            f"Redis {version} is too old: dora-forwarder needs 6.2 or newer (XAUTOCLAIM)"
        )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        findings.warnings.append(
            f"Redis maxmemory-policy is {policy!r}: under memory pressure it may evict "
            "queued events; set maxmemory-policy noeviction"
        )
    if not int(info.get("aof_enabled", 0)) and not save.strip():
        findings.warnings.append(
            "Redis keeps nothing on disk (no AOF, no snapshots): a Redis restart loses every "
            "queued event; enable appendonly yes"
        )
    return findings
