"""Refused requests, logged at most once per interval per reason, each line with its count.

A client that is refused (a wrong key, headers too slow, too many connections) can be
refused thousands of times a second; a WARNING for each would flood the log and hide
everything else. ``RefusalTally`` decides, purely from the times it is given, when a line is
due; ``RefusalLog`` writes the lines and, inside an event loop, schedules the line that
closes an interval, so that no count is left unsaid when the refusals stop. A line names the
reason and the latest request (its client; method and path when it reached a route), never
a key that was offered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

LINE: Final = "refused %d request(s) in %.1f s: %s; latest: %s"
"""A line: the count, the seconds it covers, the reason, the latest request refused."""


@dataclass(frozen=True, slots=True)
class RefusalLine:
    """One line to write: ``count`` refusals of ``reason`` over ``period_s`` seconds."""

    reason: str
    count: int
    period_s: float
    latest: str


@dataclass(slots=True)
class _Reason:
    held: int = 0
    first_held_at: float = 0.0
    last_line_at: float | None = None
    latest: str = ""


@dataclass(slots=True)
class RefusalTally:
    """Refusals per reason, and when each reason's next line is due. Pure (times in s)."""

    interval_s: float
    _reasons: dict[str, _Reason] = field(default_factory=dict)

    def record(self, reason: str, latest: str, now: float) -> RefusalLine | None:
        """Count one refusal; the line to write now, or None when it waits for its interval.

        The first refusal of a reason is written at once; later ones at most once per
        ``interval_s``, each line with the count since the previous one.
        """
        state = self._reasons.setdefault(reason, _Reason())
        if state.held == 0:
            state.first_held_at = now
        state.held += 1
        state.latest = latest
        if state.last_line_at is None or now - state.last_line_at >= self.interval_s:
            return self._line(reason, state, now)
        return None

    def due_at(self, reason: str) -> float | None:
        """When the refusals of ``reason`` held back are due to be written (None: none held)."""
        state = self._reasons.get(reason)
        if state is None or state.held == 0 or state.last_line_at is None:
            return None
        return state.last_line_at + self.interval_s

    def flush(self, reason: str, now: float) -> RefusalLine | None:
        """The line for the refusals of ``reason`` held back, if any (their interval ended)."""
        state = self._reasons.get(reason)
        if state is None or state.held == 0:
            return None
        return self._line(reason, state, now)

    def held_reasons(self) -> list[str]:
        """The reasons with refusals not yet written."""
        return [reason for reason, state in self._reasons.items() if state.held]

    @staticmethod
    def _line(reason: str, state: _Reason, now: float) -> RefusalLine:
        line = RefusalLine(reason, state.held, now - state.first_held_at, state.latest)
        state.held, state.last_line_at = 0, now
        return line


class RefusalLog:
    """Writes refusals through a ``RefusalTally``: WARNING lines, one per reason per interval.

    ``refused`` may be called from anywhere in the server's event loop (a protocol callback,
    a request handler, a logging filter); ``flush`` writes whatever is held (at shutdown).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._tally = RefusalTally(interval_s)
        self._clock = clock
        self._scheduled: dict[str, asyncio.TimerHandle] = {}

    def refused(self, reason: str, latest: str) -> None:
        """Count a refusal of ``reason``; ``latest`` says which request (no key, no body)."""
        now = self._clock()
        line = self._tally.record(reason, latest, now)
        if line is not None:
            self._write(line)
        elif reason not in self._scheduled:
            self._schedule(reason, now)

    def flush(self) -> None:
        """Write every count held back, now (a stopping server says what it refused)."""
        for handle in self._scheduled.values():
            handle.cancel()
        self._scheduled.clear()
        now = self._clock()
        for reason in self._tally.held_reasons():
            if (line := self._tally.flush(reason, now)) is not None:
                self._write(line)

    def _schedule(self, reason: str, now: float) -> None:
        due = self._tally.due_at(reason)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test, a script): the next line or flush() says it
            return
        if due is not None:
            self._scheduled[reason] = loop.call_later(max(0.0, due - now), self._due, reason)

    def _due(self, reason: str) -> None:
        self._scheduled.pop(reason, None)
        if (line := self._tally.flush(reason, self._clock())) is not None:
            self._write(line)

    def _write(self, line: RefusalLine) -> None:
        self._logger.warning(
            LINE,
            line.count,
            line.period_s,
            line.reason,
            line.latest,
            extra={"refused": line.count, "refusal_reason": line.reason},
        )
