"""``doctor``'s checks of the fleet, from ``status``'s snapshot: workers, gate, breaker,
dead letters, and how long the oldest event has waited. Pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from workers.ops.doctor_records import Check, Level, RedisFacts

BACKLOG_WARN_S: Final = 60.0
"""The oldest waiting event (unfolded entry, or incident due and not sent) older than this
warns: a running pump folds and sends within milliseconds, and a dead worker's entries are
taken over after ``FORWARDER_RECLAIM_IDLE_S`` (60 s by default)."""
BACKLOG_FAIL_S: Final = 300.0
"""Older than five minutes fails: nothing is keeping up (or the gate holds everything)."""


def _at(ms: int | None) -> str:
    """A time in ms since the epoch, for people (UTC, to the second), as ``status`` shows it."""
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def check_workers(data: RedisFacts) -> Check:
    """At least one worker process reported within the live window."""
    live = data.status.live_workers
    if not live:
        return Check(
            "workers",
            Level.FAIL,
            "no worker reported recently: nothing is delivering",
            "start `dora-forwarder run` (or `dora-forwarder worker`) with this configuration",
        )
    hosts = sorted({name.rsplit(":", 1)[0] for name in live})
    return Check("workers", Level.OK, f"{len(live)} live ({', '.join(hosts)})")


def check_gate(data: RedisFacts) -> Check:
    """The fleet-wide gate: open, or closed for a rate limit (waits) or a refused key (fails)."""
    status = data.status
    if status.gate_open:
        return Check("gate", Level.OK, "open")
    until = _at(status.gate_closed_until_ms)
    if status.gate_reason == "auth":
        return Check(
            "gate",
            Level.FAIL,
            f"closed until {until}: Datadog refused the API key (401/403); one request "
            "probes it then",
            "fix DD_API_KEY (see api_key) on the workers and restart them: they probe at once",
        )
    return Check(
        "gate",
        Level.WARN,
        f"closed until {until} ({status.gate_reason}): the fleet waits for Datadog's rate "
        "limit, then goes on by itself",
        "nothing to do unless it stays closed; FORWARDER_MAX_REQUESTS_PER_S keeps a fleet "
        "under a quota shared with others",
    )


def check_breaker(data: RedisFacts) -> Check:
    """The circuit breaker: open means the API looked down to the whole fleet."""
    status = data.status
    if status.breaker_open:
        return Check(
            "breaker",
            Level.FAIL,
            f"open since {_at(status.breaker_opened_ms)}: the API looked down "
            f"({status.breaker_probes} probe(s), next at {_at(status.breaker_next_probe_ms)})",
            "check Datadog's status page and this network's route to the API; it closes "
            "by itself at the first good probe",
        )
    failing = status.breaker_failures
    if failing:
        return Check("breaker", Level.OK, f"closed ({failing} failed requests in a row)")
    return Check("breaker", Level.OK, "closed")


def check_dead_letters(data: RedisFacts) -> Check:
    """Dead letters are events Datadog does not have: each needs a decision."""
    count = data.status.dead_letters
    if count:
        return Check(
            "dead_letters",
            Level.FAIL,
            f"{count} event(s) could not be delivered and wait in dead letters",
            "read why with `dora-forwarder dead-letters list`, then `dead-letters replay` "
            "or `dead-letters purge`",
        )
    return Check("dead_letters", Level.OK, "none")


def check_backlog(data: RedisFacts) -> Check:
    """How long the oldest event has waited: an unfolded stream entry, or a due incident."""
    now_ms = data.status.now_ms
    parts, ages_ms = [], [0]
    if data.oldest_entry_ms is not None:
        ages_ms.append(now_ms - data.oldest_entry_ms)
        parts.append(
            f"{data.status.backlog} entries in the stream, the oldest "
            f"{(now_ms - data.oldest_entry_ms) / 1000:.0f} s old"
        )
    if data.earliest_due_ms is not None and data.earliest_due_ms <= now_ms:
        ages_ms.append(now_ms - data.earliest_due_ms)
        parts.append(
            f"{data.status.due_now} incident(s) due, the first for "
            f"{(now_ms - data.earliest_due_ms) / 1000:.0f} s"
        )
    if not parts:
        return Check("backlog", Level.OK, "nothing waiting")
    age_s, detail = max(ages_ms) / 1000, "; ".join(parts)
    fix = (
        "see `dora-forwarder status`: start workers if none is live, wait out a closed "
        "gate, or add workers"
    )
    if age_s > BACKLOG_FAIL_S:
        return Check("backlog", Level.FAIL, f"{detail}: over {BACKLOG_FAIL_S:g} s", fix)
    if age_s > BACKLOG_WARN_S:
        return Check("backlog", Level.WARN, f"{detail}: over {BACKLOG_WARN_S:g} s", fix)
    return Check("backlog", Level.OK, detail)


def check_fleet(data: RedisFacts) -> list[Check]:
    """The fleet's checks, in ``status``'s order."""
    return [
        check_workers(data),
        check_gate(data),
        check_breaker(data),
        check_dead_letters(data),
        check_backlog(data),
    ]
