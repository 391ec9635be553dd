"""What ``dora-forwarder doctor`` judges and what it says: facts in, checks out.

Plain records, no I/O: ``workers.ops.doctor_facts`` fills ``Facts``; the judges
(``workers.ops.doctor``, ``doctor_redis``, ``doctor_fleet``) turn them into ``Check``s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the status module reads Redis; the records only name its snapshot
    from workers.ops.status import Status


class Level(StrEnum):
    """How bad a check's finding is; only ``FAIL`` changes the exit code."""

    OK = "ok"
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    """One check's verdict: what was found, and the one-line fix when there is one."""

    name: str
    level: Level
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        """False only for a failed check."""
        return self.level is not Level.FAIL


@dataclass(frozen=True, slots=True)
class KeyAnswer:
    """What ``GET /api/v1/validate`` answered for DD_API_KEY."""

    status: int | None
    """The HTTP status; None when no answer came (``error`` says why)."""
    valid: bool | None = None
    """The body's ``valid``, when it had one (Datadog: 200 ``{"valid": true}``)."""
    error: str | None = None
    """Why nothing was answered: the exception, secrets removed."""


@dataclass(frozen=True, slots=True)
class ClockReading:
    """Redis ``TIME`` read between two readings of this host's clock (ms since the epoch)."""

    host_before_ms: float
    redis_ms: float
    host_after_ms: float

    @property
    def skew_ms(self) -> float:
        """This host's clock minus Redis', taken at the middle of the round trip."""
        return (self.host_before_ms + self.host_after_ms) / 2 - self.redis_ms

    @property
    def uncertainty_ms(self) -> float:
        """Half the round trip: how far off ``skew_ms`` can be."""
        return max(0.0, self.host_after_ms - self.host_before_ms) / 2


@dataclass(frozen=True, slots=True)
class RedisFacts:
    """What Redis said: its INFO, two CONFIG values, the status, the clock, the backlog."""

    info: Mapping[str, Any]
    """``INFO`` (every section), as redis-py parses it."""
    save: str
    """``CONFIG GET save`` (empty: no snapshots; ``unknown``: CONFIG is not allowed)."""
    appendfsync: str
    status: Status
    clock: ClockReading
    oldest_entry_ms: int | None
    """The time in the id of the stream's oldest entry (entries leave once folded)."""
    earliest_due_ms: int | None
    """The due time of the incident that has waited longest to be sent."""


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the checks judge. Never a secret: only whether each is set."""

    site: str
    api_url: str
    """The base URL asked (``FORWARDER_API_URL``, or ``https://api.<site>``), user-info masked."""
    api_key: KeyAnswer | None
    """None when DD_API_KEY is not set."""
    app_key_set: bool
    redis_url: str
    """FORWARDER_REDIS_URL, every password masked."""
    redis: RedisFacts | None
    redis_error: str | None = None
    """Why Redis could not be read (then ``redis`` is None)."""
