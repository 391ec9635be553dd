"""``doctor``'s checks of Redis and of this host's clock against it. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from workers.ops.doctor_records import Check, ClockReading, Facts, Level
from workers.ops.preflight import eviction_problem, persistence_problem, version_problem

MEMORY_WARN_RATIO: Final = 0.80
"""used_memory / maxmemory above this warns: with noeviction, a full Redis refuses publishes."""
MEMORY_FAIL_RATIO: Final = 0.95
"""Above this it fails: a burst or a replica's output buffer fills the rest."""

CLOCK_WARN_S: Final = 1.0
"""A host clock further than this from Redis' warns: NTP keeps clocks within milliseconds,
so a second means it is not syncing."""
CLOCK_FAIL_S: Final = 60.0
"""Further than this fails. Delivery only uses Redis' clock (hosts need not agree), but a
producer on this host dates events with the host clock (``started_at``/``finished_at`` left
out): an incident started here and finished elsewhere gets a restore time wrong by the skew,
and a minute is the scale of the restore times Datadog reports."""


def _mib(value: Any) -> str:
    return f"{int(value) / 1_048_576:.1f} MiB"


def check_redis(facts: Facts) -> list[Check]:
    """Redis reachable, new enough, persistent, not evicting, with room and its replicas."""
    data = facts.redis
    if data is None:
        error = facts.redis_error or ""
        fix = "start Redis, or set FORWARDER_REDIS_URL to yours (password included)"
        if "NoPermission" in error or "NOPERM" in error:  # an ACL user: Redis did answer
            fix = (
                "run doctor as a Redis user that may run the command named above, and read "
                "every key under FORWARDER_KEY_PREFIX (INFO, TIME and the reads of `status`)"
            )
        return [
            Check(
                "redis",
                Level.FAIL,
                f"cannot read Redis at {facts.redis_url}: {error} "
                "(the checks of Redis, workers and backlog need it)",
                fix,
            )
        ]
    info, replication = data.info, data.status.replication
    version = str(info.get("redis_version", "?"))
    if replication.role == "slave":
        reach = Check(
            "redis",
            Level.FAIL,
            f"{facts.redis_url} is a replica of {replication.primary_of_replica}: writes fail",
            "point FORWARDER_REDIS_URL at the primary",
        )
    else:
        reach = Check("redis", Level.OK, f"{facts.redis_url} answers (Redis {version})")
    checks = [reach]
    too_old = version_problem(info)
    checks.append(
        Check("redis_version", Level.FAIL, too_old, "upgrade Redis to 6.2 or newer")
        if too_old
        else Check("redis_version", Level.OK, f"{version} (6.2 or newer needed)")
    )
    checks.append(_persistence(info, data.save, data.appendfsync))
    evicts = eviction_problem(info)
    checks.append(
        Check(
            "redis_eviction",
            Level.FAIL,
            evicts,
            "CONFIG SET maxmemory-policy noeviction, and the same in redis.conf",
        )
        if evicts
        else Check("redis_eviction", Level.OK, "maxmemory-policy noeviction")
    )
    checks.append(_memory(info))
    checks.append(_replicas(replication.connected_replicas, replication.wanted))
    return checks


def _persistence(info: Mapping[str, Any], save: str, appendfsync: str) -> Check:
    if int(info.get("aof_enabled", 0)):
        return Check("redis_persistence", Level.OK, f"AOF on (appendfsync {appendfsync})")
    nothing = persistence_problem(info, save)
    if nothing:
        return Check(
            "redis_persistence",
            Level.FAIL,
            nothing,
            "CONFIG SET appendonly yes, and appendonly yes in redis.conf",
        )
    if save == "unknown":  # CONFIG is not allowed: whether snapshots are taken is not known
        snapshots = "snapshot settings unknown (CONFIG is not allowed here)"
    else:
        snapshots = f"snapshots only (save {save!r})"
    return Check(
        "redis_persistence",
        Level.WARN,
        f"AOF off, {snapshots}: a crash loses what came since the last snapshot, if any",
        "CONFIG SET appendonly yes, and appendonly yes in redis.conf",
    )


def _memory(info: Mapping[str, Any]) -> Check:
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    if not limit:
        return Check(
            "redis_memory",
            Level.OK,
            f"{_mib(used)} used; no maxmemory (the host's memory is the limit)",
        )
    ratio = used / limit
    detail = f"{_mib(used)} of maxmemory {_mib(limit)} used ({ratio:.0%})"
    fix = (
        "raise maxmemory, let the workers drain the backlog, or purge dead letters "
        "you have read (a full Redis refuses every publish)"
    )
    if ratio > MEMORY_FAIL_RATIO:
        return Check("redis_memory", Level.FAIL, f"{detail}, over {MEMORY_FAIL_RATIO:.0%}", fix)
    if ratio > MEMORY_WARN_RATIO:
        return Check("redis_memory", Level.WARN, f"{detail}, over {MEMORY_WARN_RATIO:.0%}", fix)
    return Check("redis_memory", Level.OK, detail)


def _replicas(connected: int, wanted: int) -> Check:
    if not wanted:
        return Check(
            "replicas",
            Level.OK,
            f"{connected} connected; writes wait for none (FORWARDER_PUBLISH_REPLICAS=0)",
        )
    if connected < wanted:
        return Check(
            "replicas",
            Level.FAIL,
            f"{connected} connected, FORWARDER_PUBLISH_REPLICAS={wanted}: every publish fails "
            "until enough are back",
            "bring the replicas back (INFO replication on the primary), or lower "
            "FORWARDER_PUBLISH_REPLICAS",
        )
    return Check(
        "replicas", Level.OK, f"{connected} connected, FORWARDER_PUBLISH_REPLICAS={wanted}"
    )


def check_clock(clock: ClockReading) -> Check:
    """This host's clock against Redis' ``TIME``, beyond what the round trip can explain."""
    skew_s = clock.skew_ms / 1000
    beyond_s = max(0.0, abs(skew_s) - clock.uncertainty_ms / 1000)
    side = "ahead of" if skew_s > 0 else "behind"
    amount = f"{abs(skew_s):.1f} s" if abs(skew_s) >= 1 else f"{abs(clock.skew_ms):.0f} ms"
    detail = f"this host is {amount} {side} Redis' clock"
    fix = "sync this host's clock (NTP: timedatectl, chrony)"
    if beyond_s > CLOCK_FAIL_S:
        return Check(
            "clock",
            Level.FAIL,
            f"{detail}, over {CLOCK_FAIL_S:g} s: events published here without times are "
            "dated wrong",
            fix,
        )
    if beyond_s > CLOCK_WARN_S:
        return Check("clock", Level.WARN, f"{detail}, over {CLOCK_WARN_S:g} s", fix)
    return Check("clock", Level.OK, detail)
