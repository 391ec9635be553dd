"""Expiry never drops work (I1), against real Redis and the real scripts.

An incident's state is kept while it is due, in flight or backing off, whatever
``FORWARDER_RETENTION_S`` says; the retention counts from the moment Datadog holds the state
(or it is dead-lettered). A state that is missing anyway (deleted by hand, or expired under an
older version) is dead-lettered by the claim with a reason and counted, never dropped.
Expiry is real: retentions of a few hundred milliseconds, waited out on Redis' clock.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import LetterField, LetterSource, RedisKeys, StatsField
from tests.delivery.expiry_helpers import past, wait_for
from workers.delivery.fold import plan_fold
from workers.delivery.gate import REASON_AUTH, GateUpdate
from workers.delivery.records import Claim, Settlement, Verdict
from workers.delivery.store import Store

pytestmark = pytest.mark.anyio

ID = "incident-expiry-0001"
START = {"id": ID, "started_at": 1_700_000_000, "services": ["checkout"], "env": "prod"}
FINISH = {"id": ID, "finished_at": 1_700_000_600}
RETENTION_MS = 300
"""Short enough to wait out, long enough for a fold, a claim and a settle to run."""


async def fold(
    store: Store, client: Any, *events: dict[str, Any], orphan_wait_ms: int = 60_000
) -> None:
    for event in events:
        await client.xadd(store.keys.ingest, encode_entry(to_event(event)))
    entries = await store.read("c1", 100, None)
    await store.fold(plan_fold(entries), retention_ms=RETENTION_MS, orphan_wait_ms=orphan_wait_ms)


async def claim(store: Store, **kw: Any) -> list[Claim]:
    return (await store.claim(10, 60_000, "t", probe_ms=5_000, **kw)).claims


async def test_due_state_outlives_its_retention(store: Store, client: Any) -> None:
    """A state still due after its retention has passed is kept, and claimed whole."""
    await fold(store, client, START, FINISH)
    await past(store, 3 * RETENTION_MS)
    claims = await claim(store)
    assert [c.incident_id for c in claims] == [ID]
    assert claims[0].attributes["finished_at"] == 1_700_000_600 * 10**9


async def test_backing_off_state_outlives_its_retention(store: Store, client: Any) -> None:
    """Retries keep the state however long they take: the retention has not started."""
    await fold(store, client, START)
    (first,) = await claim(store)
    await store.settle(
        "t", [Settlement(ID, first.version, Verdict.RETRY, 0, "HTTP 503")], GateUpdate()
    )
    await past(store, 3 * RETENTION_MS)
    (again,) = await claim(store)
    assert (again.incident_id, again.attempt) == (ID, 1)


async def test_auth_paused_state_outlives_its_retention(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Events waiting for a working key are kept, however long the key is refused."""
    await fold(store, client, START)
    (first,) = await claim(store)
    refused = GateUpdate(close_ms=60_000, close_reason=REASON_AUTH, answered=True)
    await store.settle(
        "t", [Settlement(ID, first.version, Verdict.RETRY, 60_000, "HTTP 403")], refused
    )
    await past(store, 3 * RETENTION_MS)
    assert await client.exists(keys.incident(ID)) == 1
    assert await client.zscore(keys.due, ID) is not None


async def test_orphan_finish_outlives_its_retention(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A finish waiting for its start longer than the retention is kept until it is settled."""
    await fold(store, client, FINISH, orphan_wait_ms=60_000)
    await past(store, 3 * RETENTION_MS)
    later = await store.redis_time_ms() + 60_000
    (orphan,) = await claim(store, now_ms=later)
    assert orphan.attributes == {"id": ID, "finished_at": 1_700_000_600 * 10**9}


async def test_delivered_state_expires_after_the_retention(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Once Datadog holds the state, it is kept for the retention, then goes quietly."""
    await fold(store, client, START, FINISH)
    (claimed,) = await claim(store)
    assert await client.pttl(keys.incident(ID)) == -1  # no expiry while in flight
    await store.settle(
        "t",
        [Settlement(ID, claimed.version, Verdict.DELIVERED)],
        GateUpdate(),
        retention_ms=RETENTION_MS,
    )
    assert 0 < await client.pttl(keys.incident(ID)) <= RETENTION_MS
    await wait_for(lambda: client.exists(keys.incident(ID)), False, what="the state to expire")
    assert await client.xlen(keys.dead) == 0


async def test_dead_lettered_state_expires_after_the_retention(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A dead-lettered state is kept for the retention (a replay merges with it), then goes."""
    await fold(store, client, START)
    (claimed,) = await claim(store)
    dead = Settlement(ID, claimed.version, Verdict.DEAD, 0, "HTTP 400", "{}")
    await store.settle("t", [dead], GateUpdate(), retention_ms=RETENTION_MS)
    assert 0 < await client.pttl(keys.incident(ID)) <= RETENTION_MS


async def test_change_after_delivery_lifts_the_expiry(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A state made due again by a new event is kept until that change is delivered."""
    await fold(store, client, START)
    (claimed,) = await claim(store)
    await store.settle(
        "t",
        [Settlement(ID, claimed.version, Verdict.DELIVERED)],
        GateUpdate(),
        retention_ms=RETENTION_MS,
    )
    await fold(store, client, FINISH)
    assert await client.pttl(keys.incident(ID)) == -1
    await past(store, 3 * RETENTION_MS)
    (finish,) = await claim(store)
    assert "finished_at" in finish.attributes


async def test_missing_state_of_a_due_incident_is_dead_lettered(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A due incident whose state is gone becomes a dead letter with a reason, and a count."""
    await fold(store, client, START)
    await client.delete(keys.incident(ID))  # by hand, or expired under an older version
    assert await claim(store) == []
    ((_, letter),) = await client.xrange(keys.dead)
    assert letter[LetterField.SOURCE.encode()] == LetterSource.INCIDENT.encode()
    assert letter[LetterField.INCIDENT_ID.encode()] == ID.encode()
    assert b"state is missing" in letter[LetterField.REASON.encode()]
    assert json.loads(letter[LetterField.DETAIL.encode()])["attributes"] is None
    stats = await client.hgetall(keys.stats)
    assert stats[StatsField.STATES_MISSING.encode()] == b"1"
    assert stats[StatsField.DEAD_LETTERS.encode()] == b"1"
    assert ID.encode() in stats[StatsField.LAST_ERROR.encode()]
    assert await client.zcard(keys.due) == 0


async def test_missing_state_of_a_lapsed_claim_is_dead_lettered(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A claim whose worker died and whose state is gone ends as a dead letter too."""
    await fold(store, client, START)
    await store.claim(10, 1, "dead-worker", probe_ms=5_000)
    await client.delete(keys.incident(ID))
    later = await store.redis_time_ms() + 1_000
    assert await claim(store, now_ms=later) == []
    assert await client.xlen(keys.dead) == 1
    assert (await client.zcard(keys.due), await client.zcard(keys.inflight)) == (0, 0)


async def test_expiry_set_by_an_older_version_is_lifted_by_the_claim(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A due state that still carries an older version's expiry keeps it no longer."""
    await fold(store, client, START)
    await client.pexpire(keys.incident(ID), 60_000)  # as every fold used to
    await claim(store)
    assert await client.pttl(keys.incident(ID)) == -1
