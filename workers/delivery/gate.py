"""Pure policy of the fleet-wide gate: what a batch of answers tells every worker.

The gate itself lives in Redis (``lua/claim.lua`` checks and spends it, ``lua/settle.lua``
updates it) so that every worker on every machine obeys one state. This module decides,
from the answers a worker just got, what to tell it: close (why, for how long), the
request budget left in Datadog's window, or that answers carry no rate-limit headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from workers.delivery.outcome import AUTH_STATUSES
from workers.delivery.ratelimit import MAX_WAIT_S, header_values, retry_after_s
from workers.delivery.records import Attempt

DEFAULT_RATE_LIMIT_WAIT_S: Final = 10.0
"""How long a 429 without usable X-RateLimit-Reset or -Period closes the gate."""

REASON_RATE_LIMIT: Final = "rate_limit"
REASON_AUTH: Final = "auth"

MAX_BUDGET_REQUESTS: Final = 1_000_000
"""The most requests per window the gate believes from X-RateLimit-Limit and -Remaining.

Datadog publishes no limit for the DORA endpoints, and the largest it publishes for any API is
250,000 events a minute (reference/DORA-API.md, section 5); a larger figure is broken or
hostile, and is believed as this bound, which holds nothing back. The bound also keeps every
figure an integer that Redis can count with: Lua prints numbers of 10^14 and more as
``1e+14``, which the scripts could not count down. ``lua/_prelude.lua`` holds the same bound.
"""


@dataclass(frozen=True, slots=True)
class Budget:
    """Datadog's window as its headers describe it: requests left and when it resets."""

    limit: int
    remaining: int
    reset_ms: int
    period_ms: int


@dataclass(frozen=True, slots=True)
class GateUpdate:
    """What a batch of answers changes in the gate (all fields may be empty)."""

    close_ms: int = 0
    close_reason: str = ""
    close_detail: str = ""
    budget: Budget | None = None
    unlimited: bool = False
    answered: bool = False
    """Some attempt finished (answer or error): a probe in progress is over."""
    app_key_close_ms: int = 0
    """Pause PATCH and DELETE fleet-wide this long: Datadog refused the application key."""
    app_key_detail: str = ""
    app_key_works: bool = False
    """A PATCH or DELETE got an answer that got past the application key (a 2xx, a 404, a
    400): whatever paused them is over, and a probe of the key has its answer."""


def _count_header(attempt: Attempt, name: str) -> int | None:
    """The first usable number in header ``name``, as an integer of at most the bound."""
    values = header_values(attempt.headers, name)
    return int(min(values[0], MAX_BUDGET_REQUESTS)) if values else None


def _age_ms(attempt: Attempt, now_s: float | None) -> int:
    """How long ago the answer came (0 when either time is unknown, as in tests)."""
    if now_s is None or attempt.received_at is None:
        return 0
    return max(0, int((now_s - attempt.received_at) * 1000))


def budget_of(attempt: Attempt, now_s: float | None = None) -> Budget | None:
    """The window described by one answer's X-RateLimit-* headers, if complete and sane.

    Every figure is clamped: limit and remaining to ``MAX_BUDGET_REQUESTS``, the period and
    the reset to ``MAX_WAIT_S`` (and the reset to the period). With ``now_s`` (the clock of
    ``Attempt.received_at``) the reset counts from now, less the answer's age, so that an
    answer settled late does not push its window's end later. Negative: that window ended
    so long ago (``gate_update`` keeps no such budget).
    """
    limit = _count_header(attempt, "x-ratelimit-limit")
    remaining = _count_header(attempt, "x-ratelimit-remaining")
    period = _count_header(attempt, "x-ratelimit-period")
    reset_s = retry_after_s(attempt.headers)
    if limit is None or remaining is None or period is None or reset_s is None:
        return None
    if limit <= 0 or period <= 0:
        return None
    period_s = min(float(period), MAX_WAIT_S)
    reset_ms = int(min(reset_s, period_s) * 1000) - _age_ms(attempt, now_s)
    return Budget(limit, min(remaining, limit), reset_ms, int(period_s * 1000))


def _replaces(seen: Budget, kept: Budget | None) -> bool:
    """Whether ``seen`` is the batch's budget rather than ``kept``: a later window (its end
    half a period or more later: the headers count whole seconds), or the same window with
    fewer requests left. A batch may hold answers from both sides of a reset."""
    if kept is None:
        return True
    half_period = max(seen.period_ms, kept.period_ms) // 2
    if seen.reset_ms >= kept.reset_ms + half_period:
        return True
    if seen.reset_ms <= kept.reset_ms - half_period:
        return False
    return seen.remaining < kept.remaining


def gate_update(
    attempts: Iterable[Attempt], *, auth_pause_s: float, now_s: float | None = None
) -> GateUpdate:
    """Fold a batch of answers into one update of the fleet's gate.

    - 401/403: close for ``auth_pause_s`` (reason ``auth``); then one probe goes out. To a
      request that carried the application key (PATCH, DELETE), it refuses that key: only
      those operations pause, as long (POSTs, which need only the API key, go on).
    - 429: close until X-RateLimit-Reset (or -Period, or 10 s), capped (``rate_limit``).
    - X-RateLimit-* on any answer: the budget left in the latest window the batch saw (the
      smallest count of it); resets and 429 waits count from when each answer came
      (``now_s``, the clock of ``Attempt.received_at``), and a window already over is none.
    - a 2xx without those headers: the API does not announce limits (send freely).
    - any finished attempt, even a failed one, ends a probe.
    - a PATCH or DELETE answered otherwise than 401/403 (and not as an outage or a 429, which
      may come before the key is looked at): the application key works.
    """
    close_ms, reason, detail = 0, "", ""
    app_key_close_ms, app_key_detail, app_key_works = 0, "", False
    budget: Budget | None = None
    unlimited = answered = False
    for attempt in attempts:
        answered = True
        status = attempt.status
        if status is None:
            continue
        seen = budget_of(attempt, now_s)
        if attempt.app_key and status not in AUTH_STATUSES and status < 500:
            app_key_works = app_key_works or status not in (408, 429)
        if seen is not None and seen.reset_ms >= 0 and _replaces(seen, budget):
            budget = seen
        if status in AUTH_STATUSES and attempt.app_key:
            app_key_close_ms = int(auth_pause_s * 1000)
            app_key_detail = (
                f"HTTP {status}: Datadog refused the application key for a PATCH or DELETE"
            )
        elif status in AUTH_STATUSES:
            wait_ms = int(auth_pause_s * 1000)
            if reason != REASON_AUTH or wait_ms > close_ms:
                close_ms, reason = wait_ms, REASON_AUTH
                detail = f"HTTP {status}: Datadog refused the API key"
        elif status == 429 and reason != REASON_AUTH:
            wait_s = retry_after_s(attempt.headers) or DEFAULT_RATE_LIMIT_WAIT_S
            # Counted from when the 429 came: one settled after its reset closes nothing.
            wait_ms = int(wait_s * 1000) - _age_ms(attempt, now_s)
            if wait_ms > close_ms:
                close_ms, reason = wait_ms, REASON_RATE_LIMIT
                detail = "HTTP 429: Datadog's rate limit"
        elif 200 <= status < 300 and seen is None:
            unlimited = True
    return GateUpdate(
        close_ms,
        reason,
        detail,
        budget,
        unlimited,
        answered,
        app_key_close_ms,
        app_key_detail,
        app_key_works,
    )
