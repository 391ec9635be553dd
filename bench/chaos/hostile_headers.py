"""Chaos: every answer carries absurd X-RateLimit-* headers. Delivery goes on regardless.

The stand-in accepts every request (202) with rate-limit headers no sane API sends: 10^17,
10^300, ``inf``, ``nan``, negative numbers, words, the header joined three times
(``"7, 7, 1e300"``), 4 KB values; a different set on each answer, in turn. Every incident
must arrive, in bounded time, at a bounded cost in requests. Before the fix (the gate
stored ``1e+17``, which Lua could not count down) 300 incidents got one request through
in 90 s.
"""

from __future__ import annotations

import time
from typing import Any, Final

from bench.chaos.retention import quiet
from bench.chaos.world import Row, incidents, publish_all, stack
from harness.stack import judge, wait_until
from harness.standin import RecordedRequest

FOUR_KB: Final = "9" * 4096


def _all(value: str) -> dict[str, str]:
    return {f"X-RateLimit-{name}": value for name in ("Limit", "Remaining", "Period", "Reset")}


HOSTILE_HEADERS: Final[tuple[dict[str, str], ...]] = (
    _all("1e17"),
    _all("1e300"),
    _all("inf"),
    _all("nan"),
    _all("-5"),
    _all("lots"),
    _all(FOUR_KB),
    {**_all("1e300"), "X-RateLimit-Period": "60", "X-RateLimit-Reset": "7, 7, 1e300"},
    {**_all("9" * 30), "X-RateLimit-Period": "60", "X-RateLimit-Reset": "30"},
    {**_all("1e17"), "X-RateLimit-Limit": "-1e17", "X-RateLimit-Period": "-60"},
    # Not Limit 60: 60 a minute is a sane budget, which the gate rightly obeys.
    {**_all("1e17"), "X-RateLimit-Period": "60", "X-RateLimit-Reset": FOUR_KB},
    {**_all("1e17"), "X-RateLimit-Reset": ", ".join(["1e17"] * 200)},
)
"""Header sets the stand-in answers with, in turn. None says "nothing left": each either
claims an absurd budget or is unusable, so obeying it never means waiting."""

BODY: Final = {"data": {"type": "dora_failure"}}


def final_states(requests: list[RecordedRequest]) -> dict[str, dict[str, Any]]:
    """id -> attributes of the last accepted request for it (the canned 202s skip the
    stand-in's own record of accepted states)."""
    latest: dict[str, dict[str, Any]] = {}
    for request in requests:
        if request.status == 202 and request.attributes is not None:
            latest[str(request.attributes.get("id"))] = request.attributes
    return latest


def hostile_headers(redis_url: str, count: int = 300, timeout_s: float = 120.0) -> Row:
    """``count`` incidents through one worker while every answer's headers are absurd."""
    with stack(redis_url) as world:
        # Queued answers take turns through the sets; the last set answers any request past them.
        for turn in range(4 * count):
            headers = HOSTILE_HEADERS[turn % len(HOSTILE_HEADERS)]
            world.standin.respond_next(202, headers=headers, body=BODY)
        world.standin.respond_always(202, headers=HOSTILE_HEADERS[-1], body=BODY)
        events, expected = incidents(count, "headers")
        # A long lease: a claim stranded by a failed script would stay away for the whole run.
        world.workers.start(FORWARDER_LEASE_S="600")
        started = time.monotonic()
        publish_all(world.publisher, events)

        def arrived() -> bool:
            latest = final_states(world.standin.requests())
            return all(latest.get(i) == state for i, state in expected.items())

        wait_until(arrived, timeout_s=timeout_s, what="every incident accepted as published")
        drain_s = round(time.monotonic() - started, 1)
        wait_until(lambda: quiet(world), timeout_s=30, what="nothing left due or in flight")
        requests = world.standin.requests()
        latest = final_states(requests)
        delivered = sum(latest.get(i) == state for i, state in expected.items())
        per_incident = len(requests) / count
        received = judge(world.standin, expected)  # its duplicates and 429s; not its delivered
        return Row(
            "hostile_headers",
            count,
            delivered,
            count - delivered,
            received.duplicates,
            received.rate_limited,
            drain_s,
            f"{len(HOSTILE_HEADERS)} sets of absurd X-RateLimit-* headers in turn on every "
            f"202 (1e17, 1e300, inf, nan, negative, words, '7, 7, 1e300', 4 KB): "
            f"{len(requests)} requests, {per_incident:.2f} per incident",
            {
                "requests": len(requests),
                "requests_per_incident": per_incident,
                "drain_s": drain_s,
            },
        )
