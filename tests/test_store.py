"""Redis-side logic (fold, claim, settle) against real Redis and against fakeredis.

The same tests run on both backends (a contract for the fake); guarantees are proven on
the real one by the integration tests as well.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis

from forwarder import to_event
from forwarder._entry import encode_entry
from forwarder.protocol import RedisKeys
from workers._fold import plan_fold
from workers._store import Settlement, Store

pytestmark = pytest.mark.anyio

ID = "incident-0000000001"
START = {"id": ID, "started_at": 1_700_000_000, "services": ["checkout"], "env": "prod"}
FINISH = {"id": ID, "finished_at": 1_700_000_600}
RETENTION_MS = 3_600_000
ORPHAN_WAIT_MS = 60_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["real", "fake"])
async def client(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Any]:
    if request.param == "real":
        real = aioredis.Redis.from_url(redis_url)
        yield real
        await real.aclose()
    else:
        fake = fakeredis.FakeAsyncRedis()
        yield fake
        await fake.aclose()


@pytest.fixture
async def store(client: Any, keys: RedisKeys) -> Store:
    store = Store(client, keys)
    await store.ensure_group()
    return store


async def publish(client: Any, keys: RedisKeys, *events: dict[str, Any]) -> None:
    for event in events:
        await client.xadd(keys.ingest, encode_entry(to_event(event)))


async def ingest(store: Store, consumer: str = "c1") -> Any:
    entries = await store.read(consumer, 100, None)
    return await store.fold(
        plan_fold(entries), retention_ms=RETENTION_MS, orphan_wait_ms=ORPHAN_WAIT_MS
    )


async def test_fold_acknowledges_and_deletes_entries(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """After a fold the stream holds nothing folded, and the incident is due now."""
    await publish(client, keys, START, FINISH)
    result = await ingest(store)
    assert (result.changed, result.poison) == (1, 0)
    assert await client.xlen(keys.ingest) == 0
    assert (await client.xpending(keys.ingest, "forwarder"))["pending"] == 0
    assert await client.zrange(keys.due, 0, -1) == [ID.encode()]


async def test_duplicate_is_not_due_again(store: Store, client: Any, keys: RedisKeys) -> None:
    """An unchanged state after delivery is not sent again."""
    await publish(client, keys, START)
    await ingest(store)
    _, claims = await store.claim(10, 60_000, "t")
    await store.settle("t", [Settlement(ID, claims[0].version, "delivered")])
    await publish(client, keys, START)
    result = await ingest(store)
    assert (result.changed, result.unchanged) == (0, 1)
    assert await client.zcard(keys.due) == 0


async def test_orphan_finish_waits_then_start_makes_it_due(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A finish alone waits for its start; the start, folded later, makes it due now."""
    await publish(client, keys, FINISH)
    await ingest(store)
    _, claims = await store.claim(10, 60_000, "t")
    assert claims == []  # due only after the orphan wait
    await publish(client, keys, START)
    await ingest(store)
    _, claims = await store.claim(10, 60_000, "t")
    assert [c.incident_id for c in claims] == [ID]
    assert claims[0].attributes["finished_at"] == 1_700_000_600_000_000_000
    assert claims[0].attributes["services"] == ["checkout"]


async def test_poison_goes_to_dead_letters(store: Store, client: Any, keys: RedisKeys) -> None:
    """A bad entry is a dead letter with its payload; its good neighbour is folded."""
    await client.xadd(keys.ingest, {"v": "1", "kind": "failure", "event": "{oops"})
    await publish(client, keys, START)
    result = await ingest(store)
    assert (result.changed, result.poison) == (1, 1)
    ((_, letter),) = await client.xrange(keys.dead)
    assert b"not valid JSON" in letter[b"reason"]
    assert b"{oops" in letter[b"payload"]
    assert await client.xlen(keys.ingest) == 0


async def test_claim_is_exclusive_until_the_lease_lapses(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A claimed incident is invisible to others until its lease ends."""
    await publish(client, keys, START)
    await ingest(store)
    _, first = await store.claim(10, 0, "a")  # a lease that has already lapsed
    assert len(first) == 1
    _, second = await store.claim(10, 60_000, "b")
    assert [c.incident_id for c in second] == [ID]
    _, third = await store.claim(10, 60_000, "c")
    assert third == []


async def test_late_settlement_of_a_lapsed_claim_is_ignored(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Only the current claim holder moves the incident."""
    await publish(client, keys, START)
    await ingest(store)
    await store.claim(10, 0, "old")
    _, claims = await store.claim(10, 60_000, "new")
    counts = await store.settle("old", [Settlement(ID, claims[0].version, "retry", 1000, "x")])
    assert counts == [0, 0, 0, 1]
    assert await client.zscore(keys.inflight, ID) is not None


async def test_change_while_in_flight_is_due_again(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A finish folded while the start is in flight is sent right after."""
    await publish(client, keys, START)
    await ingest(store)
    _, claims = await store.claim(10, 60_000, "t")
    await publish(client, keys, FINISH)
    await ingest(store)
    assert await client.zcard(keys.due) == 0  # not twice in flight
    await store.settle("t", [Settlement(ID, claims[0].version, "delivered")])
    _, again = await store.claim(10, 60_000, "t")
    assert again[0].version == claims[0].version + 1
    assert again[0].sent_version == claims[0].version
    assert "finished_at" in again[0].attributes


async def test_retry_is_due_after_its_delay(store: Store, client: Any, keys: RedisKeys) -> None:
    """A retry counts the attempt and is due no sooner than its delay."""
    await publish(client, keys, START)
    await ingest(store)
    now_ms, claims = await store.claim(10, 60_000, "t")
    await store.settle("t", [Settlement(ID, claims[0].version, "retry", 30_000, "HTTP 503")])
    score = await client.zscore(keys.due, ID)
    assert score >= now_ms + 30_000
    assert await client.hget(keys.incident(ID), "attempt") == b"1"
    assert await client.hget(keys.incident(ID), "last_error") == b"HTTP 503"


async def test_dead_letter_keeps_reason_and_detail(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A permanent failure leaves a dead letter with the response, and no claim."""
    await publish(client, keys, START)
    await ingest(store)
    _, claims = await store.claim(10, 60_000, "t")
    detail = json.dumps({"status": 400, "response": "bad"})
    await store.settle("t", [Settlement(ID, claims[0].version, "dead", 0, "HTTP 400", detail)])
    ((_, letter),) = await client.xrange(keys.dead)
    assert letter[b"incident_id"] == ID.encode()
    assert json.loads(letter[b"detail"])["response"] == "bad"
    assert await client.zcard(keys.inflight) == 0
    assert await client.zcard(keys.due) == 0


async def test_reclaim_takes_entries_of_a_dead_consumer(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Entries read by a consumer that never acknowledged them are taken over."""
    await publish(client, keys, START)
    assert len(await store.read("dead-worker", 100, None)) == 1
    assert await store.reclaim("live-worker", 60_000, 100) == []  # not idle long enough
    reclaimed = await store.reclaim("live-worker", 0, 100)
    assert len(reclaimed) == 1
    await store.fold(plan_fold(reclaimed), retention_ms=RETENTION_MS, orphan_wait_ms=ORPHAN_WAIT_MS)
    assert (await client.xpending(keys.ingest, "forwarder"))["pending"] == 0
