"""Workers' writes confirmed by replicas: each fold and settlement is followed by ``WAIT``.

With ``FORWARDER_PUBLISH_REPLICAS=N`` a worker runs a fold or settlement script and ``WAIT N``
in one pipeline, on one connection (``WAIT`` counts the writes of its own connection), in one
round trip. So the state a worker wrote survives a failover once the call returns.

A shortfall does not fail the work: it is logged (one WARNING per interval, with a count)
and counted (``dora_forwarder_replica_shortfalls_total``). The primary stored the state
already and ``WAIT`` cannot undo it; failing would only repeat the same write on the same
primary (or re-send a request Datadog already took), with no better chance of reaching a
replica that is down. What a lost fold or settlement costs is bounded anyway: a fold lost in
a failover leaves its entries unacknowledged, so they are folded again; a settlement lost
leaves its incident claimed, so it is sent again once the lease ends (a duplicate, which
Datadog's upsert by id absorbs).

While replicas fall short, waiting the full timeout on every write would slow a worker to a
few writes per second. A short ``WAIT`` does not help: Redis ends a blocked ``WAIT`` on its
clock's tick (``hz``, 100 ms by default), so even ``WAIT 1 1`` takes about 100 ms. So after a
shortfall, writes go without ``WAIT`` (each counted as a shortfall: nothing confirmed it),
bar one per ``PROBE_EVERY_S`` that waits the full timeout; the first probe that enough
replicas acknowledge ends it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from forwarder.replicas import Replicas

log = logging.getLogger("dora_forwarder.replication")

PROBE_EVERY_S: Final = 1.0
"""While replicas fall short, one write per this many seconds waits for them (a probe)."""
SHORTFALL_LOG_INTERVAL_S: Final = 60.0
"""At most one WARNING per this many seconds about replica shortfalls, with their count."""


@dataclass(slots=True)
class ReplicaWaits:
    """How long the next ``WAIT`` may take, and which shortfalls to log. Pure (times in s)."""

    replicas: Replicas
    short_since: float | None = None
    """When replicas started falling short (None: they keep up)."""
    last_probe: float = 0.0
    unlogged: int = 0
    last_line: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    """Shortfalls per operation since the last line."""

    def timeout_ms(self, now: float) -> int | None:
        """The next write's ``WAIT`` timeout; None: no ``WAIT`` (replicas fall short, and
        this write is no probe)."""
        if self.short_since is None or now - self.last_probe >= PROBE_EVERY_S:
            self.last_probe = now
            return self.replicas.timeout_ms
        return None

    def record(self, acknowledged: int, operation: str, now: float) -> str | None:
        """Note what ``WAIT`` answered; the WARNING to write now, if one is due."""
        if acknowledged >= self.replicas.wanted:
            self.short_since = None
            return None
        if self.short_since is None:
            self.short_since = now
        self.counts[operation] = self.counts.get(operation, 0) + 1
        if self.last_line is not None and now - self.last_line < SHORTFALL_LOG_INTERVAL_S:
            return None
        counted = ", ".join(f"{n} {name}" for name, n in sorted(self.counts.items()))
        self.counts.clear()
        self.last_line = now
        return (
            f"only {acknowledged} of {self.replicas.wanted} replica(s) acknowledged a write "
            f"(FORWARDER_PUBLISH_REPLICAS) within {self.replicas.timeout_ms} ms; the state is "
            f"stored on the primary and work goes on, but a failover now could undo it "
            f"(replayed then: folds are redone, settled requests re-sent). Short writes since "
            f"the last such line: {counted}. Is a replica down or far behind?"
        )


class ReplicatedScripts:
    """Runs the workers' scripts followed by ``WAIT`` (when replicas are wanted)."""

    def __init__(
        self,
        client: aioredis.Redis,
        replicas: Replicas,
        on_shortfall: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._waits = ReplicaWaits(replicas)
        self._on_shortfall = on_shortfall or (lambda _operation: None)
        self._clock = clock

    async def run(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any], operation: str
    ) -> Any:
        """``script``'s reply; a shortfall is logged and counted, never raised."""
        wanted = self._waits.replicas.wanted
        if not wanted:
            return await script(keys=keys, args=args)
        timeout_ms = self._waits.timeout_ms(self._clock())
        if timeout_ms is None:
            reply = await script(keys=keys, args=args)
            self._note(0, operation)
            return reply
        for _ in range(2):
            pipe = self._redis.pipeline(transaction=False)
            # EVALSHA rather than the script object: in a pipeline that would ask SCRIPT
            # EXISTS first, a second round trip on every call. NOSCRIPT (a restarted or
            # failed-over Redis) loads it and runs the pair again: the script never ran.
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.wait(wanted, timeout_ms)
            reply, acknowledged = await pipe.execute(raise_on_error=False)
            if not isinstance(reply, NoScriptError):
                break
            await self._redis.script_load(script.script)
        if isinstance(reply, Exception):
            raise reply
        self._note(acknowledged, operation)
        return reply

    def _note(self, acknowledged: object, operation: str) -> None:
        failed = isinstance(acknowledged, Exception)  # e.g. a Redis that does not know WAIT
        count = 0 if failed else int(acknowledged)  # type: ignore[call-overload]
        line = self._waits.record(count, operation, self._clock())
        if count < self._waits.replicas.wanted:
            self._on_shortfall(operation)
        if line is not None:
            log.warning(line + (f" (WAIT answered: {acknowledged})" if failed else ""))
