"""Absurd X-RateLimit-* values cost at most a probe: clamped before Redis, never fatal in it."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import httpx
import pytest
import redis
from redis.exceptions import ResponseError

from forwarder import Publisher, to_event
from forwarder.entry import encode_entry
from forwarder.protocol import GateField, RedisKeys, StateField
from harness.stack import Workers, wait_until
from harness.standin import StandinServer
from workers.delivery.fold import plan_fold
from workers.delivery.gate import MAX_BUDGET_REQUESTS, Budget, GateUpdate, budget_of, gate_update
from workers.delivery.ratelimit import MAX_WAIT_S
from workers.delivery.records import Attempt, Settlement, Verdict
from workers.delivery.store import Store

ON_FAKEREDIS_TOO = True
"""Each test using ``client`` runs on the real Redis and on fakeredis (see conftest)."""
HUGE = "1e17"
HOSTILE = {
    "X-RateLimit-Limit": HUGE,
    "X-RateLimit-Remaining": HUGE,
    "X-RateLimit-Period": HUGE,
    "X-RateLimit-Reset": HUGE,
}


def answer(status: int, headers: dict[str, str]) -> Attempt:
    return Attempt(status, httpx.Headers(headers), "")


@pytest.mark.parametrize("huge", [HUGE, "1" + "0" * 40, "1e300", "123456789012345678.9"])
def test_budget_numbers_are_clamped_integers(huge: str) -> None:
    """Limit and remaining above the bound are believed as the bound: integers Redis counts."""
    headers = {**HOSTILE, "X-RateLimit-Limit": huge, "X-RateLimit-Remaining": huge}
    budget = budget_of(answer(202, headers))
    assert budget == Budget(
        limit=MAX_BUDGET_REQUESTS,
        remaining=MAX_BUDGET_REQUESTS,
        reset_ms=int(MAX_WAIT_S * 1000),
        period_ms=int(MAX_WAIT_S * 1000),
    )
    assert all(type(v) is int for v in (budget.limit, budget.remaining))


def test_a_sane_budget_is_untouched() -> None:
    """Datadog's own figures pass through as they are."""
    headers = {
        "X-RateLimit-Limit": "600",
        "X-RateLimit-Remaining": "599",
        "X-RateLimit-Period": "60",
        "X-RateLimit-Reset": "7, 7",
    }
    assert gate_update([answer(202, headers)], auth_pause_s=60).budget == Budget(
        600, 599, 7_000, 60_000
    )


# --- the scripts: whatever the gate hash holds, a claim neither fails nor strands ids ---

ID = "incident-hostile-{:06d}"


async def due(client: Any, keys: RedisKeys, count: int) -> Store:
    store = Store(client, keys)
    await store.ensure_group()
    for i in range(count):
        event = {"id": ID.format(i), "started_at": 1_700_000_000, "team": "ops"}
        await client.xadd(keys.ingest, encode_entry(to_event(event)))
    entries = await store.read("c", 100, None)
    await store.fold(plan_fold(entries), retention_ms=3_600_000, orphan_wait_ms=60_000)
    return store


@pytest.mark.anyio
async def test_a_budget_settle_cannot_store_as_an_integer_costs_a_probe(
    client: Any, keys: RedisKeys
) -> None:
    """A budget of 10^17 handed to settle (past the policy's clamp) is ignored, not stored as
    '1e+17': claims go on, one probe per answer, and nothing is stranded in flight."""
    store = await due(client, keys, 3)
    now = await store.redis_time_ms()
    huge = GateUpdate(
        budget=Budget(limit=10**17, remaining=10**17, reset_ms=30_000, period_ms=60_000),
        answered=True,
    )
    await store.settle("t", [], huge, now_ms=now)
    for step in range(1, 4):
        claimed = await store.claim(10, 60_000, "a", probe_ms=1_000, now_ms=now + step)
        assert len(claimed.claims) == 1
        assert await client.zcard(keys.inflight) == step
        await store.settle("t", [], huge, now_ms=now + step)
    assert await client.hget(keys.gate, GateField.LIMIT) is None


@pytest.mark.anyio
@pytest.mark.parametrize("stored", ["1e+17", "1e+300", "inf", "nan", "lots", "-5"])
async def test_a_gate_hash_holding_garbage_costs_at_most_a_probe(
    client: Any, keys: RedisKeys, stored: str
) -> None:
    """Budget fields an older version wrote unchecked (or any garbage): claims never fail,
    never strand ids in flight, and at worst go one at a time until an answer tells."""
    store = await due(client, keys, 3)
    now = await store.redis_time_ms()
    await client.hset(
        keys.gate,
        mapping={
            GateField.LIMIT: stored,
            GateField.REMAINING: stored,
            GateField.WINDOW_END_MS: now + 30_000,
            GateField.PERIOD_MS: 60_000,
            GateField.BUDGET_MS: now,
        },
    )
    result = await store.claim(10, 60_000, "a", probe_ms=1_000, now_ms=now + 1)
    assert len(result.claims) >= 1
    assert await client.zcard(keys.inflight) == len(result.claims)


@pytest.mark.anyio
async def test_a_malformed_settlement_is_refused_before_any_write(
    client: Any, keys: RedisKeys
) -> None:
    """settle.lua checks a whole batch first: a bad entry in it changes nothing (not half)."""
    store = await due(client, keys, 1)
    (claimed,) = (await store.claim(10, 60_000, "t", probe_ms=1_000)).claims
    good = Settlement(claimed.incident_id, claimed.version, Verdict.DELIVERED)
    bad = Settlement(ID.format(99), "not a version", Verdict.DELIVERED)  # type: ignore[arg-type]
    with pytest.raises(ResponseError, match="settlement of incident-hostile-000099"):
        await store.settle("t", [good, bad], GateUpdate(answered=True))
    assert await client.zcard(keys.inflight) == 1
    assert await client.hget(keys.incident(claimed.incident_id), StateField.SENT) is None


def test_lua_holds_the_same_bound() -> None:
    """The scripts' bound on request counts is the policy's."""
    prelude = resources.files("workers.delivery").joinpath("lua", "_prelude.lua").read_text()
    (bound,) = re.findall(r"local MAX_BUDGET_REQUESTS = (\d+)", prelude)
    assert int(bound) == MAX_BUDGET_REQUESTS


# --- a real worker against an API whose every answer carries hostile headers ---


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers",
    [
        HOSTILE,
        {**HOSTILE, "X-RateLimit-Period": "60", "X-RateLimit-Reset": "30"},
        {**HOSTILE, "X-RateLimit-Limit": "9" * 30, "X-RateLimit-Remaining": "9" * 30},
    ],
    ids=["all-1e17", "limit-remaining-1e17", "thirty-nines"],
)
def test_hostile_headers_on_every_answer_do_not_stall_the_fleet(
    headers: dict[str, str],
    standin: StandinServer,
    workers: Workers,
    redis_url: str,
    prefix: str,
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """Every 2xx says 10^17 requests are left: all incidents still arrive, within a lease."""
    standin.respond_always(202, headers=headers, body={"data": {"type": "dora_failure"}})
    # A long lease: claims a failed script stranded would stay away for the whole test.
    workers.start(FORWARDER_LEASE_S="600")
    count = 200
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        ids = {publisher.incident_started(team="ops", id=ID.format(i)) for i in range(count)}

    def accepted() -> set[str]:
        return {
            str(r.attributes["id"])
            for r in standin.requests()
            if r.status == 202 and r.attributes is not None
        }

    wait_until(lambda: ids <= accepted(), timeout_s=120, what="every incident accepted")
    assert wait_until(
        lambda: sync_redis.zcard(keys.inflight) == 0 and sync_redis.zcard(keys.due) == 0,
        timeout_s=10,
        what="nothing left due or in flight",
    )
