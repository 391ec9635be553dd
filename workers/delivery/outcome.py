"""Pure policy: what a response (or a failure to get one) means for an incident."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from workers.delivery.backoff import BackoffPolicy
from workers.delivery.ratelimit import retry_after_s
from workers.delivery.records import Attempt, Verdict

AUTH_STATUSES: Final = frozenset({401, 403})
"""The key is wrong or revoked: keep every event and try again later; never dead-letter."""

RETRYABLE_STATUSES: Final = frozenset({408, 425, 429}) | frozenset(range(500, 600)) - {501}
"""Worth another try: timeouts, rate limits and server errors (501 will not get better)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict, the delay before the next try (retries only) and a reason for humans."""

    verdict: Verdict
    delay_s: float = 0.0
    reason: str = ""


def decide(
    attempt: Attempt,
    *,
    failures_so_far: int,
    backoff: BackoffPolicy,
    uniform: Callable[[], float] = random.random,
) -> Decision:
    """Classify ``attempt`` of an incident that already failed ``failures_so_far`` times."""
    status = attempt.status
    if status is None:
        return Decision(
            Verdict.RETRY,
            backoff.delay_s(failures_so_far, uniform),
            f"network error: {attempt.error or 'no response'}",
        )
    if 200 <= status < 300:
        return Decision(Verdict.DELIVERED, reason=f"HTTP {status}")
    delay_s = backoff.delay_s(failures_so_far, uniform)
    if status == 429:
        wait_s = retry_after_s(attempt.headers)
        return Decision(Verdict.RETRY, max(delay_s, wait_s or 0.0), "rate limited (HTTP 429)")
    if status in AUTH_STATUSES:
        return Decision(
            Verdict.RETRY,
            delay_s,
            f"Datadog refused the API key (HTTP {status}): check DD_API_KEY and DD_SITE",
        )
    if status in RETRYABLE_STATUSES:
        return Decision(Verdict.RETRY, delay_s, f"HTTP {status} from Datadog")
    return Decision(Verdict.DEAD, reason=f"rejected by Datadog (HTTP {status})")
