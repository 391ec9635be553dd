"""The scripts under hostile state and bad timing (real Redis, pinned clock): a key of the wrong
type, a counter that is no number, a breaker probe that sends nothing. None may fail a script
halfway (Redis does not undo a script's writes) or waste what the fleet shares."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import GateField, RedisKeys, StatsField
from harness import streams
from workers.delivery.breaker import BreakerPolicy, BreakerUpdate
from workers.delivery.fold import plan_fold
from workers.delivery.gate import GateUpdate
from workers.delivery.records import Claim, ClaimResult, Settlement, Verdict
from workers.delivery.store import Store

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000_000
"""A pinned Redis clock (ms)."""
LEASE_MS = 60_000
BREAKER = BreakerPolicy(failures=3, probe_ms=1_000, probe_max_ms=4_000)


async def fold(store: Store, client: aioredis.Redis, keys: RedisKeys, *ids: str) -> None:
    for incident in ids:
        event = {"id": incident, "started_at": 1_700_000_000, "team": "ops"}
        await client.xadd(keys.ingest, encode_entry(to_event(event)))
    entries = await store.read("c1", 1_000, None)
    await store.fold(plan_fold(entries), retention_ms=3_600_000, orphan_wait_ms=60_000)


async def take(store: Store, at_ms: int, limit: int = 100) -> ClaimResult:
    return await store.claim(limit, LEASE_MS, "t", probe_ms=5_000, now_ms=at_ms, breaker=BREAKER)


async def settle(store: Store, at_ms: int, *settlements: Settlement) -> Any:
    return await store.settle(
        "t",
        list(settlements),
        GateUpdate(answered=True),
        now_ms=at_ms,
        breaker_update=BreakerUpdate(0, False),
        breaker=BREAKER,
    )


async def test_a_due_id_whose_key_is_no_hash_is_a_dead_letter_not_a_failed_claim(
    store: Store, client: aioredis.Redis, keys: RedisKeys
) -> None:
    """The good incident of the batch is claimed; the other becomes a dead letter saying why,
    and leaves the due set: nothing is stranded in flight by a script that failed halfway."""
    await fold(store, client, keys, "incident-good-000001")
    await client.set(keys.incident("incident-string-0001"), "not a state")
    await client.zadd(keys.due, {"incident-string-0001": 0})
    result = await take(store, T0)
    assert [c.incident_id for c in result.claims] == ["incident-good-000001"]
    assert await client.zrange(keys.inflight, 0, -1) == [b"incident-good-000001"]
    assert await client.zcard(keys.due) == 0
    ((_, letter),) = await streams.entries_async(client, keys.dead)
    assert letter[b"incident_id"] == b"incident-string-0001"
    assert b"not a hash but a string" in letter[b"reason"]


async def test_counters_that_are_no_numbers_fail_no_claim(
    store: Store, client: aioredis.Redis, keys: RedisKeys
) -> None:
    """A stats counter holding a word (written by hand) costs nothing: counted from zero."""
    await fold(store, client, keys, "incident-good-000001")
    await client.hset(keys.stats, mapping={StatsField.DEAD_LETTERS: "garbage"})
    await client.zadd(keys.due, {"incident-missing-001": 0})
    result = await take(store, T0)
    assert [c.incident_id for c in result.claims] == ["incident-good-000001"]
    assert await client.hget(keys.stats, StatsField.DEAD_LETTERS) == b"1"


async def test_a_shared_key_of_the_wrong_type_refuses_before_any_write(
    store: Store, client: aioredis.Redis, keys: RedisKeys
) -> None:
    """With the stats key clobbered, claim refuses whole (BADKEY): no id moves in flight."""
    await fold(store, client, keys, "incident-good-000001")
    await client.delete(keys.stats)
    await client.set(keys.stats, "clobbered")
    with pytest.raises(ResponseError, match="BADKEY"):
        await take(store, T0)
    assert await client.zcard(keys.inflight) == 0
    assert await client.zcard(keys.due) == 1


@pytest.mark.parametrize("version", ["not-a-number", "1.5", "1e3"])
async def test_a_fold_onto_a_state_whose_version_is_no_number_writes_nothing(
    store: Store, client: aioredis.Redis, keys: RedisKeys, version: str
) -> None:
    """The fold refuses before writing: an update half applied would read as a duplicate when
    folded again one by one, and be lost without a dead letter. HINCRBY takes an integer
    only, so a number of another form ('1.5', '1e3') is refused as well."""
    state = keys.incident("incident-broken-0001")
    await client.hset(state, mapping={"version": version})
    await client.xadd(
        keys.ingest,
        encode_entry(
            to_event({"id": "incident-broken-0001", "started_at": 1_700_000_000, "team": "a"})
        ),
    )
    entries = await store.read("c1", 10, None)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.fold(plan_fold(entries), retention_ms=3_600_000, orphan_wait_ms=60_000)
    assert await client.hgetall(state) == {b"version": version.encode()}


async def test_a_breaker_probe_that_sends_nothing_is_given_back(
    store: Store, client: aioredis.Redis, keys: RedisKeys
) -> None:
    """While the breaker is open, a probe claim settled without a request (say, already sent)
    hands the probe back: the next due incident probes at once, not a doubled spacing later."""
    await fold(store, client, keys, "incident-a-00000001", "incident-b-00000001")
    await client.hset(
        keys.gate,
        mapping={
            GateField.BREAKER_OPENED_MS: T0,
            GateField.BREAKER_PROBES: 0,
            GateField.BREAKER_PROBE_AT_MS: T0,
        },
    )
    (first,) = (await take(store, T0)).claims
    nothing_sent = Settlement(first.incident_id, first.version, Verdict.DELIVERED, reason="sent")
    await settle(store, T0 + 5, nothing_sent)
    assert await client.hget(keys.gate, GateField.BREAKER_PROBE_AT_MS) == str(T0 + 5).encode()
    assert await client.hget(keys.gate, GateField.BREAKER_PROBES) == b"0"
    second = await take(store, T0 + 10)
    assert [c.incident_id for c in second.claims] != [first.incident_id]
    assert len(second.claims) == 1, (second.gate_reason, second.wait_ms)


async def test_a_finish_is_remembered_only_for_the_state_just_delivered(
    store: Store, client: aioredis.Redis, keys: RedisKeys
) -> None:
    """A start delivered while its finish was folded meanwhile writes no finish record: the
    record would claim Datadog holds a finish it was never sent."""
    await fold(store, client, keys, "incident-late-000001")
    (start,) = (await take(store, T0)).claims
    await client.xadd(
        keys.ingest,
        encode_entry(to_event({"id": "incident-late-000001", "finished_at": 1_700_000_600})),
    )
    entries = await store.read("c1", 10, None)
    await store.fold(plan_fold(entries), retention_ms=3_600_000, orphan_wait_ms=60_000)
    await settle(store, T0 + 5, delivered(start))
    assert not await client.exists(keys.finished("incident-late-000001"))


def delivered(claim: Claim) -> Settlement:
    return Settlement(claim.incident_id, claim.version, Verdict.DELIVERED, sent_at_ms=T0)


async def test_a_settlement_onto_a_state_whose_numbers_are_words_fails_no_batch(
    store: Store, client: aioredis.Redis, keys: RedisKeys
) -> None:
    """``version``, ``sent`` and ``doubt_until_ms`` written as words by hand: the batch is still
    settled (they count as 0), and the good claim beside it is delivered."""
    await fold(store, client, keys, "incident-good-000001", "incident-words-00001")
    claims = (await take(store, T0)).claims
    await client.hset(
        keys.incident("incident-words-00001"),
        mapping={"version": "x", "sent": "y", "doubt_until_ms": "z"},
    )
    result = await settle(store, T0 + 5, *(delivered(c) for c in claims))
    assert result.delivered == 2
    assert await client.zcard(keys.inflight) == 0
