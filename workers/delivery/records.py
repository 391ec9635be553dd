"""The records the delivery engine passes between its parts: pure data, no I/O.

An ``Attempt`` is what one request produced; a ``Claim`` an incident (or deployment) taken
for delivery; a ``Settlement`` what becomes of it (its ``Verdict``); the ``*Result``s what
the store's scripts report back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from forwarder.protocol import parse_state_id

MAX_BODY_KEPT: Final = 4096
"""Bytes of a response body (or of an error) kept for a dead letter or a log line."""


class Verdict(StrEnum):
    """What happens to a claimed incident after an attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    WAIT = "wait"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST produced: a status with headers and body, or a transport error."""

    status: int | None
    headers: Mapping[str, str]
    body: str
    error: str | None = None
    elapsed_s: float = 0.0
    """How long the request took, as the worker saw it."""
    in_doubt: bool = False
    """No answer, but the request may have reached the API (a timeout, a connection lost
    after it was written): it may still be applied later."""
    app_key: bool = False
    """The request carried the application key (a PATCH or a DELETE): a 401/403 refuses
    that key, and pauses only those operations."""
    received_at: float | None = None
    """``time.monotonic()`` when the answer came (None: not known, as in tests). The gate
    counts X-RateLimit-Reset from then, not from when the answer is settled."""


@dataclass(frozen=True, slots=True)
class Claim:
    """An incident claimed for delivery: its merged attributes and bookkeeping."""

    incident_id: str
    version: int
    sent_version: int
    attempt: int
    first_seen_ms: int
    failing_since_ms: int | None
    attributes: dict[str, Any]
    claimed_at_ms: int = 0
    """Redis' clock when it was claimed: what ages and waits are measured against."""
    published_ms: int | None = None
    """When the newest entry behind this version was published (Redis' clock)."""
    remembered_digest: str | None = None
    """In a state made again after it expired: the digest of what Datadog holds."""
    doubt_until_ms: int | None = None
    """An earlier request may still land at the API until then (Redis' clock); a send of
    the current version claimed at or after it is owed. None: no request is in doubt."""
    done: Mapping[str, str] = field(default_factory=dict)
    """What Datadog accepted last of each request (``done:*`` fields, see
    ``workers.delivery.operations``): only what differs is sent."""
    same_second_as: str | None = None
    """Another deployment of the same service and env holds this one's second at Datadog:
    its id (see ``fold.lua``); this one's POST is dead-lettered instead of overwriting it."""
    waits_for: str | None = None
    """A PATCH by version: the deployment of that service, env and version whose POST is
    still to be sent (``Store.claim`` looks it up): the PATCH waits for it."""
    app_key_paused_until_ms: int = 0
    """The fleet's pause of PATCH and DELETE (a refused application key) ends then."""
    problem: str | None = None
    """Why the stored state cannot be used (a field that does not parse, named), or None.

    Such a claim is dead-lettered without a request; its unreadable fields keep their
    stored text in ``attributes`` (or their default in the numbers)."""

    @property
    def kind(self) -> str:
        """``failure`` or ``deployment``: which endpoint the state goes to."""
        return parse_state_id(self.incident_id)[0]


@dataclass(frozen=True, slots=True)
class Settlement:
    """The outcome of one claim, as ``settle.lua`` records it."""

    incident_id: str
    version: int
    verdict: Verdict
    delay_ms: int = 0
    reason: str = ""
    detail: str = ""
    digest: str = ""
    """Of the attributes Datadog now holds (``state_digest``), for a delivered claim."""
    sent_at_ms: int = 0
    """When the request was sent (its claim's time, ms, Redis clock); 0: nothing was sent."""
    doubt: bool = False
    """The request may still land at the API (no answer, see ``Attempt.in_doubt``)."""
    outage: bool = False
    """The attempt failed as when the API is down (see ``breaker.is_outage``): while the
    circuit breaker is open, the incident stays due instead of backing off alone."""
    step: str = ""
    """The request this settles (``operations.Step``: post, patch, delete); '' for none."""
    step_done: str = ""
    """What ``done:<step>`` records once the step is delivered or dead-lettered."""
    more: bool = False
    """Other requests are owed after this step: due again at once, not yet ``sent``."""
    forget: bool = False
    """Forget what Datadog accepted (``done:*``, ``sent``, the doubt): requests in doubt may
    have landed out of order, so every request of the state goes again, in order."""
    app_key_wait: bool = False
    """Waits for a usable application key (missing, or refused): counted in ``status``."""


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What a claim got: Redis' clock, the claims, or how long the gate says to wait."""

    now_ms: int
    wait_ms: int
    gate_reason: str
    claims: list[Claim]
    gate_reopened: str = ""
    """The reason of a closure of the gate this claim found over ('' if none); one claim
    fleet-wide gets it, so that one line says the fleet sends again."""


@dataclass(frozen=True, slots=True)
class SettleResult:
    """Counts of settlements by verdict (stale: the claim had passed to another worker)."""

    delivered: int
    retried: int
    dead: int
    stale: int
    gate_newly_closed: bool
    breaker_opened: bool = False
    """This batch opened the circuit breaker."""
    breaker_closed: bool = False
    """This batch closed it: the API answered again."""
    app_key_newly_paused: bool = False
    """This batch paused PATCH and DELETE fleet-wide: Datadog refused the application key."""


@dataclass(frozen=True, slots=True)
class FoldResult:
    """How many incidents a fold changed, left unchanged (duplicates) and dead-lettered."""

    changed: int
    unchanged: int
    poison: int


@dataclass(frozen=True, slots=True)
class TickCheck:
    """How old a tick was when a worker took it (Redis' clock), and whether it was dropped."""

    age_ms: int
    dropped_total: int
    """The fleet's count of dropped ticks after this one; 0 when this one runs."""

    @property
    def dropped(self) -> bool:
        """Whether the tick was too old to run."""
        return self.dropped_total > 0
