"""Chaos: the whole API answers 503 after the fleet learnt its limits (defect 11 of issue 11).

The fleet delivers a first batch, so that its gate knows Datadog's limits from X-RateLimit-*
headers (and sends freely within them); then every answer is a 503 for ``outage_s`` while a
backlog waits (incidents and deployments, PATCHes and DELETEs: ``world.mixed``); then the
API recovers. Figures: requests the API received during
the outage per waiting incident, and the time from recovery to everything delivered. With the
default backoff (1 s doubling to 300 s), as in production.
"""

from __future__ import annotations

import contextlib
import time

from bench.chaos.world import (
    Row,
    drained,
    incidents,
    judge_work,
    mixed,
    publish_all,
    publish_later,
    row,
    stack,
)
from forwarder.protocol import GateField
from harness.stack import wait_until
from harness.standin import RATE_LIMIT_NAMES

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
        for name in RATE_LIMIT_NAMES:  # Datadog's headers on every endpoint's answers
            world.standin.rate_limit(limit, period_s, name=name)
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
        work = mixed(count, "down")
        publish_all(world.publisher, work.events)
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
        publish_later(world, work, timeout_s=30)  # DELETEs of events delivered since
        with contextlib.suppress(AssertionError):
            wait_until(drained(world, work), timeout_s=60, what="delivery after recovery")
        waiting_at_60_s = len(judge_work(world, work).lost)
        with contextlib.suppress(AssertionError):  # old code: backoffs of up to 300 s
            wait_until(drained(world, work), timeout_s=drain_timeout_s, what="everything")
        recovery_s = time.monotonic() - recovered
        client.close()
        opened = "never" if opened_after_s is None else f"after {opened_after_s:.1f} s"
        return row(
            "outage_after_learning",
            world,
            work,
            started,
            f"limit {limit}/{period_s} s learnt, {workers} workers x 2 processes, {outage_s:g} s "
            f"of 503s with {work.published} events waiting: {during} requests "
            f"({during / work.published:.2f} per event), breaker opened {opened}; everything "
            f"delivered {recovery_s:.1f} s after recovery ({waiting_at_60_s} still waiting "
            "at 60 s)",
            requests_during_outage=during,
            requests_per_incident=during / work.published,
            recovery_s=recovery_s,
            waiting_at_60_s=waiting_at_60_s,
        )
