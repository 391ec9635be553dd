"""Reading Datadog's rate-limit headers, defensively."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

MAX_WAIT_S: Final = 3600.0
"""A reset further away than this is taken as hostile or broken and capped."""


def header_values(headers: Mapping[str, str], name: str) -> list[float]:
    """The usable numbers in header ``name``: finite, not negative, in the order sent.

    The header sometimes arrives twice and is joined as ``"7, 7"``; words, ``inf`` and
    ``nan`` are dropped rather than trusted. ``headers`` must be case-insensitive (aiohttp's
    and httpx's are), and ``name`` lower-case.
    """
    raw = headers.get(name)
    if raw is None:
        return []
    values = []
    for part in raw.split(","):
        try:
            value = float(part.strip())
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            values.append(value)
    return values


def _seconds(headers: Mapping[str, str], name: str) -> float | None:
    values = header_values(headers, name)
    return max(values) if values else None


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds until Datadog's window resets, from ``X-RateLimit-Reset`` or ``-Period``.

    ``headers`` must be case-insensitive (aiohttp's and httpx's are). Returns None when
    neither header holds a usable number; caps absurd values at ``MAX_WAIT_S``.
    """
    wait = _seconds(headers, "x-ratelimit-reset")
    if wait is None:
        wait = _seconds(headers, "x-ratelimit-period")
    return None if wait is None else min(wait, MAX_WAIT_S)
