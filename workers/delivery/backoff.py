"""Backoff between delivery attempts: exponential, capped, with full jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delay before retry number ``attempt`` is uniform in ``[0, min(max_s, base_s * 2**attempt)]``.

    Full jitter spreads the retries of many incidents that failed together (an outage)
    instead of sending them back in one wave.
    """

    base_s: float = 1.0
    max_s: float = 300.0

    def delay_s(self, attempt: int, uniform: Callable[[], float] = random.random) -> float:
        """Seconds to wait after ``attempt`` failures (``attempt`` >= 0)."""
        ceiling = self.max_s if attempt >= 63 else min(self.max_s, self.base_s * 2.0**attempt)
        return ceiling * uniform()
