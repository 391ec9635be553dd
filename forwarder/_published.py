"""What publishing returns: the event's id (saying whether it was spooled), a drain's counts.

Free of I/O and of ``fcntl``, so that the Publisher loads it on every platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Self

DEFAULT_SPOOL_MAX_BYTES: Final = 64 * 1_048_576
"""64 MiB: about 300,000 incident events of a typical size (200 bytes a record)."""


class Published(str):
    """An event's id (a ``str``, as before), with ``spooled``: True when Redis was away and
    the event was appended to the publisher's local spool instead, from where a background
    thread sends it, in order, once Redis answers. False: Redis took it."""

    spooled: bool

    def __new__(cls, event_id: str, spooled: bool = False) -> Self:
        published = super().__new__(cls, event_id)
        published.spooled = spooled
        return published


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What one drain of a spool did: records sent to Redis, records skipped (torn or bad)
    with a WARNING each, and records still waiting when it ended."""

    sent: int = 0
    skipped: int = 0
    waiting: int = 0
