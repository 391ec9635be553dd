"""Contract: with PATCH and DELETE entries too, the Lua fold agrees with the pure merge, and
ends in the same state whatever order the batches are folded in.

A DELETE drops every field older than it and shuts out any entry older than it folded later,
so that a reclaimed or reordered entry can never bring a deleted deployment back.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any, cast

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import (
    KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_DELETE,
    KIND_DEPLOYMENT_PATCH,
    RedisKeys,
    state_id,
)
from workers.delivery.fold import StoredField, merge, plan_fold
from workers.delivery.store import Store

ID = "deployment-contract-0001"
STATE = state_id(KIND_DEPLOYMENT, ID)

operations = st.one_of(
    st.builds(
        lambda version, second: (
            KIND_DEPLOYMENT,
            {
                "id": ID,
                "service": "checkout",
                "version": version,
                "started_at": 1_700_000_000 + second,
                "finished_at": 1_700_000_100 + second,
            },
        ),
        st.sampled_from(["v1", "v2"]),
        st.integers(0, 2),
    ),
    st.builds(
        lambda failed, remedy: (
            KIND_DEPLOYMENT_PATCH,
            {"id": ID, "change_failure": failed}
            | ({"remediation": {"id": remedy, "type": "rollback"}} if remedy else {}),
        ),
        st.booleans(),
        st.sampled_from([None, "remedy-a", "remedy-b"]),
    ),
    st.just((KIND_DEPLOYMENT_DELETE, {"id": ID})),
)


def pure(entries: list[tuple[str, dict[bytes, bytes]]]) -> dict[str, Any]:
    stored: dict[str, StoredField] = {}
    for update in plan_fold(entries).updates:
        stored, _ = merge(stored, update)
    return {name: json.loads(field.value) for name, field in stored.items()}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(operations, min_size=1, max_size=8),
    split=st.lists(st.integers(1, 3), min_size=8, max_size=8),
    order=st.randoms(use_true_random=False),
)
def test_lua_fold_of_operations_matches_pure_merge_in_any_order(
    redis_url: str,
    ops: list[tuple[str, dict[str, Any]]],
    split: list[int],
    order: random.Random,
) -> None:
    entries = [
        (f"{1000 + i}-0", cast(dict[bytes, bytes], encode_entry(to_event(data, kind))))
        for i, (kind, data) in enumerate(ops)
    ]
    batches, start = [], 0
    for size in split:
        if start < len(entries):
            batches.append(entries[start : start + size])
            start += size
    order.shuffle(batches)
    expected = pure(entries)

    # The pure merge alone, batch by batch in that order, agrees with itself in stream order.
    stored: dict[str, StoredField] = {}
    for batch in batches:
        for update in plan_fold(batch).updates:
            stored, _ = merge(stored, update)
    assert {n: json.loads(f.value) for n, f in stored.items()} == expected

    keys = RedisKeys(f"contract-{uuid.uuid4().hex[:10]}")

    async def fold_in_redis() -> dict[bytes, bytes]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            store = Store(client, keys)
            for batch in batches:
                await store.fold(plan_fold(batch), retention_ms=60_000, orphan_wait_ms=0)
            state = cast(dict[bytes, bytes], await client.hgetall(keys.incident(STATE)))
            second_keys = [key async for key in client.scan_iter(match=keys.second_prefix + "*")]
            await client.delete(keys.incident(STATE), keys.due, keys.stats, keys.ingest)
            if second_keys:
                await client.delete(*second_keys)
            return state
        finally:
            await client.aclose()

    state = asyncio.run(fold_in_redis())
    folded = {k.decode()[2:]: json.loads(v) for k, v in state.items() if k.startswith(b"a:")}
    assert folded == expected
    last_kind = ops[-1][0]
    if last_kind == KIND_DEPLOYMENT_DELETE:
        assert set(folded) == {"delete"}, "something older than the last DELETE survived it"
