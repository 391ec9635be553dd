"""Chaos: the whole API answers 503 after the fleet learnt its limits (defect 11 of issue 11).

The fleet delivers a first batch, so that its gate knows Datadog's limits from X-RateLimit-*
headers (and sends freely within them); then every answer is a 503 for ``outage_s`` while a
backlog of incidents waits; then the API recovers. Figures: requests the API received during
the outage per waiting incident, and the time from recovery to everything delivered. With the
default backoff (1 s doubling to 300 s), as in production.
"""

from __future__ import annotations

import contextlib
import time

from bench.chaos.world import Row, drained, incidents, publish_all, row, stack
from forwarder.protocol import GateField
from harness.stack import wait_until

PRODUCTION_BACKOFF = {"FORWARDER_BACKOFF_BASE_S": "1", "FORWARDER_BACKOFF_MAX_S": "300"}


def outage_after_learning(
    redis_url: str,
    count: int = 1000,
    outage_s: float = 30.0,
    *,
    workers: int = 2,
    limit: int = 2000,
    period_s: int = 10,
    drain_timeout_s: float = 360.0,
) -> Row:
    """Limits learnt, then ``outage_s`` of 503s with ``count`` incidents waiting, then recovery."""
    with stack(redis_url) as world:
        world.standin.rate_limit(limit, period_s)
        for _ in range(workers):
            world.workers.start("worker", "--concurrency=2", **PRODUCTION_BACKOFF)
        world.workers.start("beat")
        learn_events, learnt = incidents(50, "learn")
        publish_all(world.publisher, learn_events)
        wait_until(drained(world, learnt), timeout_s=60, what="the first batch")
        client = world.redis()
        assert client.hget(world.keys.gate, GateField.LIMIT) == str(limit).encode()

        world.standin.respond_always(503)
        started = time.monotonic()
        events, expected = incidents(count, "down")
        publish_all(world.publisher, events)
        opened_after_s = None
        while time.monotonic() - started < outage_s:  # the outage lasts this long, whatever
            if opened_after_s is None and client.hexists(
                world.keys.gate, GateField.BREAKER_OPENED_MS
            ):
                opened_after_s = time.monotonic() - started
            time.sleep(0.05)
        during = world.standin.status_counts().get(503, 0)
        world.standin.respond_always(None)
        recovered = time.monotonic()
        with contextlib.suppress(AssertionError):
            wait_until(drained(world, expected), timeout_s=60, what="delivery after recovery")
        latest = world.standin.latest()
        waiting_at_60_s = sum(1 for i, state in expected.items() if latest.get(i) != state)
        with contextlib.suppress(AssertionError):  # old code: backoffs of up to 300 s
            wait_until(drained(world, expected), timeout_s=drain_timeout_s, what="everything")
        recovery_s = time.monotonic() - recovered
        client.close()
        opened = "never" if opened_after_s is None else f"after {opened_after_s:.1f} s"
        return row(
            "outage_after_learning",
            world,
            expected,
            started,
            f"limit {limit}/{period_s} s learnt, {workers} workers x 2 processes, {outage_s:g} s "
            f"of 503s with {count} incidents waiting: {during} requests "
            f"({during / count:.2f} per incident), breaker opened {opened}; everything "
            f"delivered {recovery_s:.1f} s after recovery ({waiting_at_60_s} still waiting "
            "at 60 s)",
            requests_during_outage=during,
            requests_per_incident=during / count,
            recovery_s=recovery_s,
            waiting_at_60_s=waiting_at_60_s,
        )
