"""Redis-side logic (fold, claim, settle) against real Redis and against fakeredis.

The same tests run on both backends (a contract for the fake); guarantees are proven on
the real one by the integration tests as well.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import RedisKeys
from tests.delivery.events import FINISH, ID, START, publish
from workers.delivery.fold import plan_fold
from workers.delivery.gate import GateUpdate
from workers.delivery.records import Settlement, Verdict
from workers.delivery.store import Store

pytestmark = pytest.mark.anyio
ON_FAKEREDIS_TOO = True
"""Each test using ``client`` runs on the real Redis and on fakeredis (see conftest)."""

RETENTION_MS = 3_600_000
ORPHAN_WAIT_MS = 60_000


async def claim(store: Store, lease_ms: int = 60_000, holder: str = "t", **kw: Any) -> Any:
    return (await store.claim(10, lease_ms, holder, probe_ms=5_000, **kw)).claims


NO_GATE = GateUpdate()


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


async def test_fold_takes_a_pinned_clock(store: Store, client: Any, keys: RedisKeys) -> None:
    """With ``now_ms`` given, the fold dates the state and its due time by it, not by Redis."""
    await publish(client, keys, START)
    entries = await store.read("c1", 100, None)
    now_ms = 4_000_000_000_000  # far from Redis' clock
    await store.fold(
        plan_fold(entries), retention_ms=RETENTION_MS, orphan_wait_ms=ORPHAN_WAIT_MS, now_ms=now_ms
    )
    assert int(await client.hget(keys.incident(ID), "first_ms")) == now_ms
    assert await client.zscore(keys.due, ID) == now_ms


async def test_duplicate_is_not_due_again(store: Store, client: Any, keys: RedisKeys) -> None:
    """An unchanged state after delivery is not sent again."""
    await publish(client, keys, START)
    await ingest(store)
    claims = await claim(store, 60_000, "t")
    await store.settle("t", [Settlement(ID, claims[0].version, Verdict.DELIVERED)], NO_GATE)
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
    claims = await claim(store, 60_000, "t")
    assert claims == []  # due only after the orphan wait
    await publish(client, keys, START)
    await ingest(store)
    claims = await claim(store, 60_000, "t")
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
    first = await claim(store, 0, "a")  # a lease that has already lapsed
    assert len(first) == 1
    second = await claim(store, 60_000, "b")
    assert [c.incident_id for c in second] == [ID]
    third = await claim(store, 60_000, "c")
    assert third == []


async def test_late_settlement_of_a_lapsed_claim_is_ignored(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Only the current claim holder moves the incident."""
    await publish(client, keys, START)
    await ingest(store)
    await claim(store, 0, "old")
    claims = await claim(store, 60_000, "new")
    counts = await store.settle(
        "old", [Settlement(ID, claims[0].version, Verdict.RETRY, 1000, "x")], NO_GATE
    )
    assert (counts.delivered, counts.retried, counts.dead, counts.stale) == (0, 0, 0, 1)
    assert await client.zscore(keys.inflight, ID) is not None


async def test_change_while_in_flight_is_due_again(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A finish folded while the start is in flight is sent right after."""
    await publish(client, keys, START)
    await ingest(store)
    claims = await claim(store, 60_000, "t")
    await publish(client, keys, FINISH)
    await ingest(store)
    assert await client.zcard(keys.due) == 0  # not twice in flight
    await store.settle("t", [Settlement(ID, claims[0].version, Verdict.DELIVERED)], NO_GATE)
    again = await claim(store, 60_000, "t")
    assert again[0].version == claims[0].version + 1
    assert again[0].sent_version == claims[0].version
    assert "finished_at" in again[0].attributes


async def test_retry_is_due_after_its_delay(store: Store, client: Any, keys: RedisKeys) -> None:
    """A retry counts the attempt and is due no sooner than its delay."""
    await publish(client, keys, START)
    await ingest(store)
    result = await store.claim(10, 60_000, "t", probe_ms=5_000)
    now_ms, claims = result.now_ms, result.claims
    await store.settle(
        "t", [Settlement(ID, claims[0].version, Verdict.RETRY, 30_000, "HTTP 503")], NO_GATE
    )
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
    claims = await claim(store, 60_000, "t")
    detail = json.dumps({"status": 400, "response": "bad"})
    await store.settle(
        "t", [Settlement(ID, claims[0].version, Verdict.DEAD, 0, "HTTP 400", detail)], NO_GATE
    )
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
    assert await store.reclaim("live-worker", 60_000, 100) == ("0-0", [])  # not idle long enough
    _, reclaimed = await store.reclaim("live-worker", 0, 100)
    assert len(reclaimed) == 1
    await store.fold(plan_fold(reclaimed), retention_ms=RETENTION_MS, orphan_wait_ms=ORPHAN_WAIT_MS)
    assert (await client.xpending(keys.ingest, "forwarder"))["pending"] == 0


async def test_idle_consumers_without_pending_entries_are_forgotten(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Names of dead processes leave the group; one holding entries stays for reclaim."""
    await publish(client, keys, START)
    await store.read("holds-an-entry", 10, None)
    await client.xgroup_createconsumer(keys.ingest, "forwarder", "read-nothing")
    assert await store.forget_idle_consumers(keep="me", idle_ms=0) == 1
    names = {c["name"] for c in await client.xinfo_consumers(keys.ingest, "forwarder")}
    assert names == {b"holds-an-entry"}
    assert await store.forget_idle_consumers(keep="me", idle_ms=3_600_000) == 0


async def test_claim_carries_when_its_newest_event_was_published(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A claim knows the publish time of the newest entry behind its version (stream id ms)."""
    await publish(client, keys, START)
    finish_id = await client.xadd(keys.ingest, encode_entry(to_event(FINISH)))
    await ingest(store)
    (claimed,) = await claim(store)
    assert claimed.published_ms == int(finish_id.decode().split("-")[0])
    assert claimed.published_ms <= claimed.claimed_at_ms


async def test_heartbeat_records_live_workers_and_forgets_silent_ones(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Each heartbeat stamps its process on Redis' clock; long-silent processes are dropped."""
    now_ms = await store.redis_time_ms()
    await client.zadd(keys.workers, {"gone-host:1": now_ms - 7_200_000})
    await store.heartbeat("host-a:10", forget_after_ms=3_600_000)
    seen = dict(await client.zrange(keys.workers, 0, -1, withscores=True))
    assert set(seen) == {b"host-a:10"}
    assert seen[b"host-a:10"] >= now_ms
