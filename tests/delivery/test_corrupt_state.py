"""A stored state the worker cannot read is a dead letter; the rest of its claim batch goes on (I7).

Real Redis: claim.lua moves the whole batch in flight before Python reads a row, so a row
that cannot be parsed must not end the run and strand the batch lease after lease.
"""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import ATTRIBUTE_PREFIX, RedisKeys, StateField
from harness import streams
from tests.delivery.fake_api import FakeDatadog, make_pump
from workers.delivery.fold import plan_fold
from workers.delivery.store import Store

pytestmark = pytest.mark.anyio

GOOD = "incident-corrupt-good"
BAD_ATTEMPT = "incident-corrupt-attempt"
BAD_SERVICES = "incident-corrupt-services"


async def fold(client: aioredis.Redis, keys: RedisKeys, *ids: str) -> None:
    """Fold one start per incident into its state, as a worker does."""
    store = Store(client, keys)
    await store.ensure_group()
    for incident in ids:
        event = {"id": incident, "started_at": 1_700_000_000, "services": ["checkout"]}
        await client.xadd(keys.ingest, encode_entry(to_event(event)))
    entries = await store.read("c1", 100, None)
    await store.fold(plan_fold(entries), retention_ms=3_600_000, orphan_wait_ms=60_000)


async def test_corrupt_states_are_dead_letters_and_the_good_one_is_delivered(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """A non-integer attempt or a non-JSON attribute: a dead letter naming the field, no request."""
    await fold(client, keys, GOOD, BAD_ATTEMPT, BAD_SERVICES)
    await client.hset(keys.incident(BAD_ATTEMPT), StateField.ATTEMPT, "1.5")
    await client.hset(keys.incident(BAD_SERVICES), f"{ATTRIBUTE_PREFIX}services", "not json")
    # No limits announced: all three are claimed in one batch, as in production.
    await client.hset(keys.gate, "unlimited_ms", 10**15)
    api = FakeDatadog()

    report = await make_pump(client, keys, api).run(0.5)

    assert report.outcomes == {"delivered": 1, "dead": 2}
    assert [body["id"] for body in api.bodies()] == [GOOD]
    letters = {
        fields[b"incident_id"].decode(): fields[b"reason"].decode()
        for _, fields in await streams.entries_async(client, keys.dead)
    }
    assert set(letters) == {BAD_ATTEMPT, BAD_SERVICES}
    assert "attempt" in letters[BAD_ATTEMPT]
    assert f"{ATTRIBUTE_PREFIX}services" in letters[BAD_SERVICES]
    assert await client.zcard(keys.inflight) == 0
    good = await client.hgetall(keys.incident(GOOD))
    assert good[b"sent"] == good[b"version"]


async def test_a_dead_letter_of_a_corrupt_state_keeps_what_could_be_read(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """The letter's detail holds the readable attributes and the unreadable one as stored."""
    await fold(client, keys, BAD_SERVICES)
    await client.hset(keys.incident(BAD_SERVICES), f"{ATTRIBUTE_PREFIX}services", "not json")
    api = FakeDatadog()

    report = await make_pump(client, keys, api).run(0.3)

    assert report.outcomes == {"dead": 1}
    assert api.requests == []
    ((_, letter),) = await streams.entries_async(client, keys.dead)
    attributes = json.loads(letter[b"detail"])["attributes"]
    assert attributes["id"] == BAD_SERVICES
    assert attributes["services"] == "not json"
