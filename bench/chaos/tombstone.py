"""Chaos: late duplicate starts after the finished states expired. Nothing regresses.

Incidents are started and finished, delivered, and their states expire (a short
``FORWARDER_RETENTION_S``). Then every start is published again, as a producer replaying
its history would, and a tenth of them with a changed field. The stand-in must never accept
a start-only state after a finish (a regression: Datadog would reopen the incident); exact
duplicates must cost no request; changed ones must arrive merged with their finish.
"""

from __future__ import annotations

import time

from bench.chaos.retention import quiet
from bench.chaos.world import Row, drained, incidents, publish_all, row, stack
from harness.stack import wait_until


def tombstone(redis_url: str, count: int = 1000, retention_s: float = 1.0) -> Row:
    """Deliver ``count`` finished incidents, let their states expire, replay their starts."""
    short = {
        "FORWARDER_RETENTION_S": f"{retention_s:g}",
        "FORWARDER_MAX_AGE_S": f"{retention_s / 2:g}",
        "FORWARDER_ORPHAN_WAIT_S": f"{retention_s / 2:g}",
    }
    with stack(redis_url) as world:
        events, expected = incidents(count, "tomb")
        world.workers.start(**short)
        started = time.monotonic()
        publish_all(world.publisher, events)
        wait_until(drained(world, expected), timeout_s=120, what="first delivery")
        wait_until(lambda: quiet(world), timeout_s=60, what="first delivery settled")
        client = world.redis()
        incident_keys = [world.keys.incident(i) for i in expected]
        wait_until(
            lambda: client.exists(*incident_keys) == 0,
            timeout_s=retention_s + 60,
            what="every state expired",
        )
        client.close()
        before = len(world.standin.requests())
        starts = [event for event in events if "started_at" in event]
        changed = {str(start["id"]) for start in starts[::10]}
        late = [
            {**start, "env": "staging"} if start["id"] in changed else start for start in starts
        ]
        for incident in changed:
            expected[incident] = {**expected[incident], "env": "staging"}
        publish_all(world.publisher, late)
        wait_until(lambda: quiet(world), timeout_s=120, what="late starts settled")
        regressions = len(world.standin.regressions())
        extra = len(world.standin.requests()) - before
        return row(
            "tombstone",
            world,
            expected,
            started,
            f"{count} finished incidents expired (retention {retention_s:g} s), then "
            f"{count} late starts ({len(changed)} of them changed): {regressions} "
            f"regressions, {extra} requests",
            regressions=regressions,
            late_requests=extra,
            changed=len(changed),
        )
