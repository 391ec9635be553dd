"""The fleet-wide gate on real Redis and fakeredis, on a pinned clock: claim.lua spends it,
settle.lua feeds it (closures, Datadog's windows and budgets, probes, the ceiling)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from forwarder.protocol import RedisKeys
from tests.delivery.events import START, publish
from workers.delivery.fold import plan_fold
from workers.delivery.gate import Budget, GateUpdate, gate_update
from workers.delivery.records import Attempt, Settlement, Verdict
from workers.delivery.store import Store

pytestmark = pytest.mark.anyio
ON_FAKEREDIS_TOO = True
"""Each test using ``client`` runs on the real Redis and on fakeredis (see conftest)."""

NO_GATE = GateUpdate()


async def ingest(store: Store) -> None:
    entries = await store.read("c1", 100, None)
    await store.fold(plan_fold(entries), retention_ms=3_600_000, orphan_wait_ms=60_000)


async def due_incidents(store: Store, client: Any, keys: RedisKeys, count: int) -> int:
    """Make ``count`` incidents due; return a pinned 'now' after they fell due."""
    for i in range(count):
        await publish(client, keys, {**START, "id": f"incident-{i:012d}"})
    await ingest(store)
    await client.hdel(keys.gate, "unlimited_ms")  # gate tests start from knowing nothing
    return await store.redis_time_ms() + 1_000


async def test_closed_gate_claims_nothing_and_says_how_long(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A 429 closes the gate for every worker until the reset; then claims resume."""
    t0 = await due_incidents(store, client, keys, 3)
    closed = await store.settle(
        "t",
        [],
        GateUpdate(close_ms=5_000, close_reason="rate_limit", answered=True, unlimited=True),
        now_ms=t0,
    )
    assert closed.gate_newly_closed
    result = await store.claim(10, 60_000, "t", probe_ms=1_000, now_ms=t0 + 1_000)
    assert (result.claims, result.wait_ms, result.gate_reason) == ([], 4_000, "rate_limit")
    again = await store.settle(
        "t", [], GateUpdate(close_ms=1_000, close_reason="rate_limit"), now_ms=t0 + 1_500
    )
    assert not again.gate_newly_closed  # already closed: one log line, not one per answer
    result = await store.claim(10, 60_000, "t", probe_ms=1_000, now_ms=t0 + 4_999)
    assert result.wait_ms == 1  # a shorter closure never shortens a longer one
    assert result.gate_reopened == ""
    result = await store.claim(10, 60_000, "t", probe_ms=1_000, now_ms=t0 + 5_000)
    assert len(result.claims) == 3
    # The claim that found it over says so, for one log line in the fleet; the next does not.
    assert result.gate_reopened == "rate_limit"
    later = await store.claim(10, 60_000, "u", probe_ms=1_000, now_ms=t0 + 5_001)
    assert (later.claims, later.gate_reopened) == ([], "")


async def test_a_reopening_is_reported_even_when_nothing_can_be_claimed(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Over while nothing is due: the first claim after it still reports it, only once."""
    t0 = await store.redis_time_ms()
    await store.settle(
        "t", [], GateUpdate(close_ms=1_000, close_reason="auth", answered=True), now_ms=t0
    )
    first = await store.claim(10, 60_000, "t", probe_ms=1_000, now_ms=t0 + 1_000)
    assert (first.claims, first.gate_reopened) == ([], "auth")
    second = await store.claim(10, 60_000, "t", probe_ms=1_000, now_ms=t0 + 1_001)
    assert second.gate_reopened == ""
    assert await client.hget(keys.gate, "reason") == b"auth"  # kept, for status


async def test_budget_spent_across_claims_and_renewed_each_window(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """X-RateLimit-Remaining bounds what the fleet sends until the window ends."""
    t0 = await due_incidents(store, client, keys, 8)
    budget = Budget(limit=3, remaining=2, reset_ms=1_000, period_ms=1_000)
    await store.settle("t", [], GateUpdate(budget=budget, answered=True), now_ms=t0)
    first = await store.claim(10, 60_000, "a", probe_ms=1_000, now_ms=t0 + 10)
    assert len(first.claims) == 2
    second = await store.claim(10, 60_000, "b", probe_ms=1_000, now_ms=t0 + 20)
    assert (len(second.claims), second.wait_ms, second.gate_reason) == (0, 980, "budget")
    third = await store.claim(10, 60_000, "c", probe_ms=1_000, now_ms=t0 + 1_000)
    assert len(third.claims) == 3  # a new window holds the whole limit
    fourth = await store.claim(10, 60_000, "d", probe_ms=1_000, now_ms=t0 + 2_500)
    assert len(fourth.claims) == 3  # and the one after that


async def test_a_late_answer_from_an_ended_window_cannot_grant_the_limit_twice(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """An answer of the last window settled after the fleet rolled to the next one says
    nothing about the new window: it must not move the window back (whose rollover would
    then give the whole limit again in a window already spent: 429s)."""
    t0 = await due_incidents(store, client, keys, 16)
    budget = Budget(limit=5, remaining=5, reset_ms=1_000, period_ms=5_000)
    await store.settle("t", [], GateUpdate(budget=budget, answered=True), now_ms=t0)
    assert len((await store.claim(10, 60_000, "a", probe_ms=1_000, now_ms=t0 + 10)).claims) == 5
    # The window ends at t0 + 1000: the next one (to t0 + 6000) holds the limit again.
    rolled = await store.claim(10, 60_000, "b", probe_ms=1_000, now_ms=t0 + 1_000)
    assert len(rolled.claims) == 5
    # An answer Datadog gave at t0 + 990 (10 ms left in its window), settled at t0 + 1050.
    late = Budget(limit=5, remaining=0, reset_ms=10, period_ms=5_000)
    await store.settle("a", [], GateUpdate(budget=late, answered=True), now_ms=t0 + 1_050)
    spent = await store.claim(10, 60_000, "c", probe_ms=1_000, now_ms=t0 + 2_100)
    assert (len(spent.claims), spent.gate_reason) == (0, "budget")
    assert spent.wait_ms == 6_000 - 2_100  # until the current window ends
    nxt = await store.claim(10, 60_000, "d", probe_ms=1_000, now_ms=t0 + 6_000)
    assert len(nxt.claims) == 5


def _came(remaining: int, reset_s: int, at_s: float) -> Attempt:
    """An answer of a window of 5 per 10 s, received at ``at_s`` (monotonic 100.0 is t0)."""
    headers = {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Period": "10",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset_s),
    }
    return Attempt(202, httpx.Headers(headers), "", received_at=at_s)


async def _spent_window(store: Store, client: Any, keys: RedisKeys) -> int:
    """Window [.., t0 + 1000) of 5 per 10 s known and spent (5 claims); t0."""
    t0 = await due_incidents(store, client, keys, 20)
    known = Budget(limit=5, remaining=5, reset_ms=1_000, period_ms=10_000)
    await store.settle("t", [], GateUpdate(budget=known, answered=True), now_ms=t0)
    assert len((await store.claim(5, 60_000, "a", probe_ms=1_000, now_ms=t0 + 10)).claims) == 5
    return t0


async def _spent_two_windows(store: Store, client: Any, keys: RedisKeys) -> int:
    """The same, then the fleet rolled over to [.., t0 + 11000) and spent it too; t0."""
    t0 = await _spent_window(store, client, keys)
    assert len((await store.claim(10, 60_000, "b", probe_ms=1_000, now_ms=t0 + 1_000)).claims) == 5
    return t0


@pytest.mark.parametrize(
    ("came_at_s", "reset_s", "settled_at_ms"),
    [
        (100.5, 1, 2_500),  # settled 2 s late, after its window ended: none
        (101.15, 1, 1_200),  # Reset rounded up to 1 s as the old window ended, 50 ms late
    ],
)
async def test_an_answer_of_the_spent_window_never_grants_the_limit_again(
    store: Store,
    client: Any,
    keys: RedisKeys,
    came_at_s: float,
    reset_s: int,
    settled_at_ms: int,
) -> None:
    """Through the pure policy as the pump calls it, settled after the rollover: the window
    the fleet is in stays spent until it ends."""
    t0 = await _spent_two_windows(store, client, keys)
    update = gate_update(
        [_came(0, reset_s, came_at_s)], auth_pause_s=60, now_s=100 + settled_at_ms / 1000
    )
    await store.settle("a", [], update, now_ms=t0 + settled_at_ms)
    again = await store.claim(10, 60_000, "c", probe_ms=1_000, now_ms=t0 + 2_600)
    assert (len(again.claims), again.gate_reason) == (0, "budget")


async def test_a_batch_across_the_reset_keeps_the_new_windows_count(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """One settle with the old window's last answer and the new window's first: the fleet
    gets what Datadog has left in the new one, not the whole limit."""
    t0 = await _spent_window(store, client, keys)
    update = gate_update([_came(0, 0, 100.99), _came(3, 10, 101.02)], auth_pause_s=60, now_s=101.03)
    await store.settle("a", [], update, now_ms=t0 + 1_030)
    nxt = await store.claim(10, 60_000, "b", probe_ms=1_000, now_ms=t0 + 1_040)
    assert len(nxt.claims) == 3


async def test_an_answer_of_the_current_window_settled_early_still_lowers_what_is_left(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Answers of the current window whose ends read earlier than the known one (settled
    late, before ages were counted; or the headers' whole seconds): never ignored, so the
    smallest count still wins."""
    t0 = await due_incidents(store, client, keys, 12)
    for at_ms, remaining, reset_ms in ((1_500, 8, 4_000), (1_600, 1, 2_400), (1_700, 3, 3_000)):
        seen = Budget(limit=10, remaining=remaining, reset_ms=reset_ms, period_ms=10_000)
        await store.settle("t", [], GateUpdate(budget=seen, answered=True), now_ms=t0 + at_ms)
    result = await store.claim(20, 60_000, "a", probe_ms=1_000, now_ms=t0 + 1_800)
    assert len(result.claims) == 1


async def test_a_shorter_window_announced_is_taken_at_once(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Datadog's period shrinks (an hour, then a minute): the new window is taken as it is,
    not held against the hour-long one until the knowledge of it expires."""
    t0 = await due_incidents(store, client, keys, 3)
    hour = Budget(limit=100, remaining=0, reset_ms=3_000_000, period_ms=3_600_000)
    await store.settle("t", [], GateUpdate(budget=hour, answered=True), now_ms=t0)
    minute = Budget(limit=60, remaining=59, reset_ms=30_000, period_ms=60_000)
    await store.settle("t", [], GateUpdate(budget=minute, answered=True), now_ms=t0 + 1_000)
    result = await store.claim(10, 60_000, "a", probe_ms=1_000, now_ms=t0 + 1_100)
    assert len(result.claims) == 3


async def test_smallest_remaining_of_one_window_wins(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Answers of one window arriving out of order cannot raise the budget back."""
    t0 = await due_incidents(store, client, keys, 5)
    for remaining in (1, 4):
        budget = Budget(limit=5, remaining=remaining, reset_ms=10_000, period_ms=10_000)
        await store.settle("t", [], GateUpdate(budget=budget, answered=True), now_ms=t0)
    result = await store.claim(10, 60_000, "t", probe_ms=1_000, now_ms=t0 + 100)
    assert len(result.claims) == 1


async def test_unknown_limits_are_probed_one_request_at_a_time(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """With nothing known, one request goes out; its answer opens the way for the rest."""
    t0 = await due_incidents(store, client, keys, 4)
    probe = await store.claim(10, 60_000, "a", probe_ms=2_000, now_ms=t0)
    assert len(probe.claims) == 1
    waiting = await store.claim(10, 60_000, "b", probe_ms=2_000, now_ms=t0 + 10)
    assert (waiting.claims, waiting.gate_reason) == ([], "probe")
    await store.settle("a", [], GateUpdate(unlimited=True, answered=True), now_ms=t0 + 20)
    rest = await store.claim(10, 60_000, "b", probe_ms=2_000, now_ms=t0 + 30)
    assert len(rest.claims) == 3


async def test_probe_without_answer_lets_another_probe_after_its_time(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A probe whose worker died does not block the fleet longer than a request can take."""
    t0 = await due_incidents(store, client, keys, 2)
    await store.claim(10, 60_000, "a", probe_ms=2_000, now_ms=t0)
    later = await store.claim(10, 60_000, "b", probe_ms=2_000, now_ms=t0 + 2_000)
    assert len(later.claims) == 1


async def test_a_probe_that_sent_nothing_is_given_back(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A probe settled without a request (already sent, a finish waiting for its start)
    leaves the next due incident free to probe at once, not after ``probe_ms``."""
    t0 = await due_incidents(store, client, keys, 3)
    probe = await store.claim(10, 60_000, "a", probe_ms=11_000, now_ms=t0)
    [claim] = probe.claims
    early = Settlement(claim.incident_id, claim.version, Verdict.WAIT, delay_ms=600_000)
    await store.settle("a", [early], NO_GATE, now_ms=t0 + 5)
    nxt = await store.claim(10, 60_000, "b", probe_ms=11_000, now_ms=t0 + 10)
    assert len(nxt.claims) == 1, nxt.gate_reason
    waiting = await store.claim(10, 60_000, "c", probe_ms=11_000, now_ms=t0 + 20)
    assert (waiting.claims, waiting.gate_reason) == ([], "probe")  # the new probe holds


async def test_refused_key_closes_then_probes(store: Store, client: Any, keys: RedisKeys) -> None:
    """After an auth pause, one request tests the key before the fleet sends again."""
    t0 = await due_incidents(store, client, keys, 3)
    await store.settle("t", [], GateUpdate(unlimited=True, answered=True), now_ms=t0)
    auth = GateUpdate(close_ms=60_000, close_reason="auth", close_detail="HTTP 403", answered=True)
    assert (await store.settle("t", [], auth, now_ms=t0 + 1)).gate_newly_closed
    assert await client.hget(keys.gate, "reason") == b"auth"
    closed = await store.claim(10, 60_000, "t", probe_ms=1_000, now_ms=t0 + 59_000)
    assert (closed.claims, closed.gate_reason) == ([], "auth")
    reopened = await store.claim(10, 60_000, "t", probe_ms=1_000, now_ms=t0 + 60_001)
    assert len(reopened.claims) == 1


async def test_ceiling_limits_the_fleet_per_second(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """FORWARDER_MAX_REQUESTS_PER_S: a token bucket every worker draws from."""
    t0 = await due_incidents(store, client, keys, 6)
    await store.settle("t", [], GateUpdate(unlimited=True, answered=True), now_ms=t0)
    first = await store.claim(10, 60_000, "t", probe_ms=1_000, ceiling_per_s=2, now_ms=t0)
    assert len(first.claims) == 2
    empty = await store.claim(10, 60_000, "t", probe_ms=1_000, ceiling_per_s=2, now_ms=t0 + 1)
    assert (empty.claims, empty.gate_reason) == ([], "ceiling")
    later = await store.claim(10, 60_000, "t", probe_ms=1_000, ceiling_per_s=2, now_ms=t0 + 501)
    assert len(later.claims) == 1
