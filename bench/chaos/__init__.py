"""Chaos: the fault scenarios of the forwarder, against the real stack, with figures.

Each scenario runs real worker processes on a Redis of its own prefix, delivering to the
local stand-in API, injects a fault, waits for the backlog to drain, and reports events
published, delivered, lost, duplicate requests, 429s received and time to drain. Most publish
incidents and deployments with PATCHes and DELETEs among them (``world.mixed``); their rows
also count PATCHes sent before their deployment's POST and events POSTed after their DELETE.
`tests/system/test_faults.py` runs the same scenarios, smaller, and asserts on the figures.

    python -m bench.chaos                 # every scenario, default sizes
    python -m bench.chaos --only sigkill  # one of them
    python -m bench.chaos --json out.json

Traffic stays on 127.0.0.1; every wait is bounded.

Each scenario is a function ``(redis_url) -> Row`` in a module of this package, named in
``SCENARIOS``.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.chaos.hostile_headers import hostile_headers
from bench.chaos.late_apply import late_apply
from bench.chaos.outage_after_learning import outage_after_learning
from bench.chaos.poison_dead_consumer import poison_dead_consumer
from bench.chaos.retention import retention
from bench.chaos.scenarios import (
    auth_then_fixed,
    garbage,
    outage,
    rate_limited,
    redis_restart,
    sigkill,
)
from bench.chaos.tombstone import tombstone
from bench.chaos.world import Row

SCENARIOS: dict[str, Callable[[str], Row]] = {
    "sigkill": sigkill,
    "redis_restart": lambda _url: redis_restart(),
    "outage": outage,
    "rate_limit": rate_limited,
    "auth": auth_then_fixed,
    "garbage": garbage,
    "retention": retention,
    "tombstone": tombstone,
    "late_apply": late_apply,
    "outage_after_learning": outage_after_learning,
    "poison_dead_consumer": lambda _url: poison_dead_consumer(),
    "hostile_headers": hostile_headers,
}

__all__ = [
    "SCENARIOS",
    "Row",
    "auth_then_fixed",
    "garbage",
    "hostile_headers",
    "late_apply",
    "outage",
    "outage_after_learning",
    "poison_dead_consumer",
    "rate_limited",
    "redis_restart",
    "retention",
    "sigkill",
    "tombstone",
]
