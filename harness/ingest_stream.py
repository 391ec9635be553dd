"""How far the ingest stream has got: what ``serve`` added and what the workers folded.

The sources' end-to-end tests must tell "nothing was enqueued" and "the worker has read
that re-sent notification, and it changed nothing" without sleeping. The stream's length
cannot say either (the fold deletes what it read), so this reads counters that only grow:
Redis' own count of entries ever added (``XINFO STREAM``, Redis 7) and the workers'
``entries_folded`` and ``updates_unchanged`` statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from forwarder.protocol import RedisKeys, StatsField
from harness.stack import wait_until


@dataclass(frozen=True, slots=True)
class Progress:
    """One reading of the counters, and of what is still to be sent."""

    added: int
    """Entries ever added to the ingest stream (deleting them does not lower it)."""
    folded: int
    """Entries the workers have folded into states."""
    unchanged: int
    """Of those, the ones that changed nothing (a repeat: no request follows)."""
    dead: int
    """Dead letters (an entry the fold could not read, or a state Datadog refused)."""
    due: int
    """States due to be sent, now or later."""
    in_flight: int
    """States a worker is sending now."""

    @property
    def settled(self) -> bool:
        """Every entry added has been folded, and nothing is waiting to be sent."""
        return self.folded + self.dead >= self.added and self.due == 0 and self.in_flight == 0


def _entries_added(client: redis.Redis, key: str) -> int:
    try:
        info: dict[str, Any] = client.xinfo_stream(key)
    except redis.ResponseError:  # no stream yet: nothing was ever added
        return 0
    return int(info["entries-added"])


def progress(client: redis.Redis, keys: RedisKeys) -> Progress:
    """The counters now."""
    folded, unchanged, dead = client.hmget(
        keys.stats,
        [StatsField.ENTRIES_FOLDED, StatsField.UPDATES_UNCHANGED, StatsField.DEAD_LETTERS],
    )
    return Progress(
        added=_entries_added(client, keys.ingest),
        folded=int(folded or 0),
        unchanged=int(unchanged or 0),
        dead=int(dead or 0),
        due=int(client.zcard(keys.due)),
        in_flight=int(client.zcard(keys.inflight)),
    )


def wait_settled(
    client: redis.Redis, keys: RedisKeys, added: int, *, timeout_s: float = 20.0
) -> Progress:
    """Wait until ``added`` entries were added and everything added since is folded and
    sent (nothing due, nothing in flight): then no request is on its way."""

    def settled() -> Progress | None:
        now = progress(client, keys)
        return now if now.added >= added and now.settled else None

    found: Progress = wait_until(
        settled, timeout_s=timeout_s, what=f"{added} ingest entries folded, nothing due"
    )
    return found
