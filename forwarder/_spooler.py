"""A publisher's way past a Redis outage: spool, keep order, drain in the background.

While the spool is empty, events go to Redis directly. When Redis does not answer (a
connection error or a timeout, not a refusal), the batch is appended to the spool instead,
and from then on every batch of this process goes behind it, until the drainer has sent all
of it: each process' events reach the stream in the order it published them.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Sequence
from typing import Final, cast

import redis

from forwarder._errors import PublishError, SpoolFullError
from forwarder._published import DrainReport
from forwarder._spool import Entry, Spool
from forwarder.entry import Event, InvalidEntryError, decode_entry, encode_entry

log = logging.getLogger("dora_forwarder.spool")

UNREACHABLE: Final = (redis.ConnectionError, redis.TimeoutError)
"""What sends an event to the spool: Redis did not answer. Anything else it said is raised."""
DRAIN_BACKOFF_BASE_S: Final = 0.05
DRAIN_BACKOFF_MAX_S: Final = 2.0
"""The longest a drainer waits between two tries: the most a recovered Redis waits to be used."""


def redis_unreachable(exc: PublishError) -> bool:
    """``exc`` says Redis did not answer in time (so spooling is right), not that it refused."""
    return not isinstance(exc, SpoolFullError) and isinstance(exc.__cause__, UNREACHABLE)


def drain_delay_s(failures: int, draw: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds before the next try after ``failures`` failed ones: doubling, capped, jittered
    over its upper half (never zero, so a dead Redis is never polled in a loop)."""
    ceiling = min(DRAIN_BACKOFF_MAX_S, DRAIN_BACKOFF_BASE_S * 2 ** min(failures, 30))
    return draw(ceiling / 2, ceiling)


class Spooler:
    """Routes a publisher's batches to ``enqueue`` (Redis) or ``spool``; drains the spool."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int,
        enqueue: Callable[[Sequence[Event]], None],
        *,
        join_timeout_s: float,
    ) -> None:
        """Open the spool in ``directory``; start the drainer (draining what a previous run
        left); ``close`` waits at most ``join_timeout_s`` for it."""
        self.spool = spool = Spool(directory, max_bytes)
        self._enqueue = enqueue
        self._join_timeout_s = join_timeout_s
        self._gate = threading.Lock()
        """Held while deciding "behind the spool?" and appending, and while the drainer
        declares the spool empty: no batch of this process can slip between the two."""
        self._behind = not spool.is_empty()  # a previous run (or a crashed one) left events
        self._wake = threading.Event()
        self._sent_total = 0  # only drains add to it, one at a time (the spool's drain lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._drain_forever, name=f"dora-spool-{spool.directory}", daemon=True
        )
        self._thread.start()
        if self._behind:
            self._wake.set()

    @property
    def waiting(self) -> int:
        """Events in the spool not yet in Redis (all processes sharing it)."""
        return self.spool.waiting()

    def send(self, events: Sequence[Event]) -> bool:
        """Enqueue ``events``, or spool them; True when spooled. Raises ``PublishError``
        for a refusal from Redis, ``SpoolFullError`` when spooling found no room."""
        with self._gate:
            if self._behind:
                self._append(events)
                return True
        try:
            self._enqueue(events)
        except PublishError as exc:
            if not redis_unreachable(exc):
                raise
            with self._gate:
                self._append(events, cause=exc)
                started, self._behind = not self._behind, True
            if started:
                log.warning(
                    "Redis did not answer (%s): spooling events in %s until it does",
                    exc,
                    self.spool.directory,
                )
            self._wake.set()
            return True
        return False

    def drain(self) -> DrainReport | None:
        """Send what waits now, in the calling thread; None if another process drains it.
        Raises the ``PublishError`` that stopped it (what was sent before is committed).

        The counts are this publisher's since it opened the spool (its background drainer's
        included: it may have started first), and what waits now."""
        report = self.spool.drain(self._send_entries, stop=self._stop)
        self._settle(report)
        if report is None:
            return None
        return DrainReport(
            sent=self._sent_total, skipped=self.spool.skipped_total, waiting=self.spool.waiting()
        )

    def close(self) -> None:
        """Stop the drainer (within ``join_timeout_s``; what waits stays on disk)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(self._join_timeout_s)
        if not self._thread.is_alive():
            self.spool.close()

    def _append(self, events: Sequence[Event], cause: PublishError | None = None) -> None:
        try:
            # encode_entry's fields are str -> str (redis-py's type says more).
            self.spool.append([cast(Entry, encode_entry(event)) for event in events])
        except SpoolFullError as exc:
            if cause is None:
                raise
            raise SpoolFullError(f"{cause}; and {exc}") from cause

    def _send_entries(self, entries: list[Entry]) -> None:
        events: list[Event] = []
        for entry in entries:
            try:
                events.append(decode_entry(entry))
            except InvalidEntryError as exc:
                log.warning(
                    "spool %s: dropped a record no worker could use: %s", self.spool.directory, exc
                )
        if events:
            self._enqueue(events)
        self._sent_total += len(events)

    def _settle(self, report: DrainReport | None) -> bool:
        """After a drain: when the spool is empty, send directly again. True if it is."""
        if report is None:
            return False
        if report.sent or report.skipped:
            log.info(
                "spool %s: sent %d event(s) to Redis, skipped %d torn or bad record(s)",
                self.spool.directory,
                report.sent,
                report.skipped,
            )
        with self._gate:
            if self.spool.is_empty():
                self._behind = False
                return True
        return False

    def _drain_forever(self) -> None:
        failures = 0
        delay_s: float | None = None  # None: wait until an append wakes us
        while True:
            self._wake.wait(delay_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                report = self.spool.drain(self._send_entries, stop=self._stop)
                drained = self._settle(report)
            except (PublishError, OSError) as exc:
                failures += 1
                delay_s = drain_delay_s(failures)
                log.debug("spool %s: Redis still away (%s)", self.spool.directory, exc)
                continue
            except Exception:  # a bug must not end the drainer silently, nor loop fast
                log.exception("spool %s: drain failed", self.spool.directory)
                failures += 1
                delay_s = drain_delay_s(failures)
                continue
            failures = 0
            # Empty: sleep until woken. Another process draining: look again later.
            # Events appended meanwhile: go on at once.
            delay_s = None if drained else DRAIN_BACKOFF_MAX_S if report is None else 0.0
