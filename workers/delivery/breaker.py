"""Pure policy of the fleet-wide circuit breaker: when answers say the API itself is down.

An outage answer (5xx except 501, a 408, or no answer at all: network errors, timeouts)
says little about one incident and much about the API; any other answer (2xx, 4xx,
429, 401/403) says the API is up, even when it refuses (the gate deals with limits and
keys). When ``BreakerPolicy.failures`` outage answers come in a row across the whole fleet,
with no other answer between them, the breaker opens: the fleet stops sending, except one
probe at a time, the first ``probe_ms`` after it opened and each next one twice as far from
the last, at most ``probe_max_ms``. The first answer that is not an outage closes it, and
every incident waiting goes out at once: failures while it is open leave incidents due (held
back by the breaker, not by their own backoff).

The breaker lives in the gate hash (``forwarder.protocol.GateField``): ``lua/settle.lua``
applies each batch's ``BreakerUpdate`` atomically, ``lua/claim.lua`` lets the probes through.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from workers.delivery.records import Attempt


def is_outage(attempt: Attempt) -> bool:
    """Whether ``attempt`` failed in a way that says the API may be down."""
    status = attempt.status
    return status is None or status == 408 or (500 <= status < 600 and status != 501)


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When the breaker opens, and how its probes are spaced (ms)."""

    failures: int = 10
    """Outage answers in a row, fleet-wide, that open it."""
    probe_ms: int = 1_000
    """From opening to the first probe; each next probe waits twice as long as the last."""
    probe_max_ms: int = 30_000
    """The longest wait between two probes."""

    def probe_spacing_ms(self, probes: int) -> int:
        """Wait before the probe that follows ``probes`` probes (as ``lua/claim.lua`` does)."""
        if probes >= 32:
            return self.probe_max_ms
        return min(self.probe_max_ms, self.probe_ms << probes)


@dataclass(frozen=True, slots=True)
class BreakerUpdate:
    """What a batch of answers tells the breaker."""

    outages: int = 0
    """Outage answers in the batch."""
    healthy: bool = False
    """Some answer was not an outage: the API is up (this wins over the batch's outages)."""


def breaker_update(attempts: Iterable[Attempt]) -> BreakerUpdate:
    """Count a batch's outage answers, and whether any answer says the API is up."""
    outages, healthy = 0, False
    for attempt in attempts:
        if is_outage(attempt):
            outages += 1
        else:
            healthy = True
    return BreakerUpdate(outages, healthy)
