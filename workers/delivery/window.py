"""Pure policy: how many requests one process may have in flight (a slow start).

A process that has not been busy does not know whether the API is up. It starts with a few
requests in flight and adds one for each answer that says the API is up (so the window
doubles each round trip), up to ``FORWARDER_MAX_IN_FLIGHT``; each outage answer halves it.
A burst of work that meets a dead API therefore costs each process a handful of requests
before the fleet's circuit breaker opens, not ``FORWARDER_MAX_IN_FLIGHT``; a healthy API has
every process at full concurrency within a few round trips.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from workers.delivery.breaker import is_outage
from workers.delivery.records import Attempt

START_FRACTION = 8
"""A window starts at 1/8 of the ceiling (at least 1 request)."""


@dataclass(frozen=True, slots=True)
class Window:
    """Requests a process may have in flight now (``size``), at most ``ceiling``."""

    ceiling: int
    size: int

    @property
    def floor(self) -> int:
        """Where a window starts, and the least it shrinks to."""
        return max(1, self.ceiling // START_FRACTION)

    @classmethod
    def start(cls, ceiling: int) -> Window:
        """A fresh process's window."""
        return cls(ceiling, max(1, ceiling // START_FRACTION))

    def after(self, answers: Iterable[Attempt]) -> Window:
        """The window after these answers: one more per healthy one, halved per outage one."""
        size = self.size
        for answer in answers:
            size = max(self.floor, size // 2) if is_outage(answer) else min(self.ceiling, size + 1)
        return Window(self.ceiling, size)

    def after_run(self, peak_in_flight: int) -> Window:
        """The window for the next run: no more than twice what the last run used.

        Proof of health goes stale: a process that had little in flight starts small again.
        """
        size = max(self.floor, min(self.size, 2 * peak_in_flight))
        return Window(self.ceiling, size)
