"""Reading Datadog's rate-limit headers, defensively."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

MAX_WAIT_S: Final = 3600.0
"""A reset further away than this is taken as hostile or broken and capped."""


def _seconds(raw: str | None) -> float | None:
    if raw is None:
        return None
    # The header sometimes arrives twice and is joined as "7, 7": take the largest value.
    values = []
    for part in raw.split(","):
        try:
            values.append(float(part.strip()))
        except ValueError:
            continue
    finite = [v for v in values if math.isfinite(v) and v >= 0]
    return max(finite) if finite else None


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds until Datadog's window resets, from ``X-RateLimit-Reset`` or ``-Period``.

    ``headers`` must be case-insensitive (httpx's are). Returns None when neither header
    holds a usable number; caps absurd values at ``MAX_WAIT_S``.
    """
    wait = _seconds(headers.get("x-ratelimit-reset"))
    if wait is None:
        wait = _seconds(headers.get("x-ratelimit-period"))
    return None if wait is None else min(wait, MAX_WAIT_S)
