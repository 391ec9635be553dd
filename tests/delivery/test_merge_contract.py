"""Contract: the Lua fold in real Redis agrees with the pure merge, in any batch order."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import cast

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.protocol import RedisKeys
from tests.delivery.events import ID, entry
from workers.delivery.fold import StoredField, merge, plan_fold
from workers.delivery.store import Store

updates = st.fixed_dictionaries(
    {},
    optional={
        "severity": st.sampled_from(["SEV-1", "SEV-2", "SEV-3"]),
        "name": st.sampled_from(["db down", "api slow"]),
        "finished_at": st.integers(1_700_000_100, 1_700_000_200),
        "custom_tags": st.lists(st.sampled_from(["a:1", "b:2"]), max_size=2),
    },
)


def event(index: int, fields: dict[str, object]) -> dict[str, object]:
    if index % 2 == 0:  # every other message is a full start, the rest finish-style updates
        return {"id": ID, "started_at": 1_700_000_000, "services": ["svc"], **fields}
    return {"id": ID, "finished_at": 1_700_000_300, **fields}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=st.lists(updates, min_size=1, max_size=6),
    split=st.lists(st.integers(1, 3), min_size=6, max_size=6),
    order=st.randoms(use_true_random=False),
)
def test_lua_fold_matches_pure_merge(
    redis_url: str, messages: list[dict[str, object]], split: list[int], order: random.Random
) -> None:
    """Folding random batches in a random order ends where the pure merge does."""
    entries = [entry(f"{1000 + i}-0", event(i, fields)) for i, fields in enumerate(messages)]
    batches, start = [], 0
    for size in split:
        if start < len(entries):
            batches.append(entries[start : start + size])
            start += size
    order.shuffle(batches)

    expected: dict[str, StoredField] = {}
    for update in plan_fold(entries).updates:
        expected, _ = merge(expected, update)

    keys = RedisKeys(f"contract-{uuid.uuid4().hex[:10]}")

    async def fold_in_redis() -> dict[bytes, bytes]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            store = Store(client, keys)
            for batch in batches:
                await store.fold(plan_fold(batch), retention_ms=60_000, orphan_wait_ms=0)
            # A client without decode_responses: names and values are bytes.
            state = cast(dict[bytes, bytes], await client.hgetall(keys.incident(ID)))
            await client.delete(keys.incident(ID), keys.due, keys.stats, keys.ingest)
            return state
        finally:
            await client.aclose()

    state = asyncio.run(fold_in_redis())
    stored = {k.decode()[2:]: json.loads(v) for k, v in state.items() if k.startswith(b"a:")}
    assert stored == {name: json.loads(field.value) for name, field in expected.items()}
