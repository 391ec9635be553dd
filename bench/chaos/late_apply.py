"""Chaos: the API applies requests late, after the client gave up on them (defect 3 of issue 11).

Each incident's start-only request is held by the API past the worker's timeout; meanwhile
its finish is published and the merged state delivered right after the timeout; then the held
start is applied, after the finish. The forwarder must send the current state once more when
the doubtful request can no longer land (its lease has ended), so that Datadog ends with the
finish.

The circuit breaker is kept shut here. Open (the timeouts would open it), it holds a doubtful
request's retry until that request can no longer land, so the finish would go after the held
start and the hazard this scenario makes would not happen; which of the two worker processes
settled which timeouts first decided whether it opened, and the scenario was a coin toss.
"""

from __future__ import annotations

import contextlib
import time

from bench.chaos.world import Row, drained, incidents, publish_all, row, stack
from harness.stack import wait_until

FAST: dict[str, str] = {
    "FORWARDER_HTTP_TIMEOUT_S": "1",
    # The held request lands 4 s after it was sent, within the lease: the README's assumption.
    "FORWARDER_LEASE_S": "6",
    # Every start in flight at once from the first round (a process starts at 1/8 of this).
    "FORWARDER_MAX_IN_FLIGHT": "800",
    # Above any count of timeouts: each finish goes at once, before its held start lands.
    "FORWARDER_BREAKER_FAILURES": "100000",
}


def late_apply(redis_url: str, count: int = 200, hold_s: float = 4.0) -> Row:
    """Starts held past the client's timeout, then applied after the finish was delivered."""
    with stack(redis_url) as world:
        world.workers.start(**FAST)
        # One delivery first: the gate learns the API announces no limits, so that every
        # start goes out at once instead of one probe at a time.
        warm_events, warm = incidents(1, "late-warm")
        publish_all(world.publisher, warm_events)
        wait_until(drained(world, warm), timeout_s=30, what="the warm-up incident")
        events, expected = incidents(count, "late")
        world.standin.apply_late(count, hold_s)
        started = time.monotonic()
        publish_all(world.publisher, events[0::2])  # the starts
        wait_until(
            lambda: sum(world.standin.late()) >= count, timeout_s=30, what="every start held"
        )
        publish_all(world.publisher, events[1::2])  # the finishes, while the starts are held
        wait_until(
            lambda: world.standin.late()[1] >= count,
            timeout_s=30,
            what="every held start applied",
        )
        regressed = len(world.standin.regressions())
        # Old code never repairs a start applied last: wait long enough, then count.
        with contextlib.suppress(AssertionError):
            wait_until(drained(world, expected), timeout_s=30, what="the finishes")
        requests = sum(
            1
            for r in world.standin.requests()
            if r.status == 202 and str((r.attributes or {}).get("id", "")).startswith("late-0")
        )
        return row(
            "late_apply",
            world,
            expected,
            started,
            f"{count} starts held {hold_s:g} s by the API (the client gives up at 1 s), "
            f"applied after their finish ({regressed} regressions at the API); "
            f"{requests} accepted requests for {count} incidents",
            regressed=regressed,
            accepted_requests=requests,
        )
