"""Forgetting idle consumers cannot drop entries a consumer reads meanwhile (real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import CONSUMER_GROUP, RedisKeys
from workers.delivery.store import Store

pytestmark = pytest.mark.anyio

START = {"id": "incident-forget-0001", "started_at": 1_700_000_000, "team": "ops"}


class Interleaving(aioredis.Redis):
    """A client that runs ``between`` once, right after the first command it sends."""

    between: Callable[[], Awaitable[Any]] | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        finally:
            step, self.between = self.between, None
            if step is not None:
                await step()


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[Interleaving, aioredis.Redis]]:
    # from_url is typed as returning the base class; it builds the subclass it is called on.
    store_client = cast(Interleaving, Interleaving.from_url(redis_url))
    other = aioredis.Redis.from_url(redis_url)
    yield store_client, other
    await store_client.aclose()
    await other.aclose()


async def test_a_read_between_check_and_delete_keeps_its_pending_entries(
    clients: tuple[Interleaving, aioredis.Redis], keys: RedisKeys
) -> None:
    """A consumer idle with nothing pending that reads while it is being forgotten keeps
    what it read pending (so it can still be reclaimed), whatever the interleaving."""
    store_client, other = clients
    store = Store(store_client, keys)
    await store.ensure_group()
    await other.xgroup_createconsumer(keys.ingest, CONSUMER_GROUP, "victim")
    await other.xadd(keys.ingest, encode_entry(to_event(START)))

    async def victim_reads() -> None:
        await other.xreadgroup(CONSUMER_GROUP, "victim", {keys.ingest: ">"}, count=10)

    store_client.between = victim_reads
    await store.forget_idle_consumers(keep="me", idle_ms=0)

    assert store_client.between is None, "the read ran during the forgetting"
    pending = await other.xpending(keys.ingest, CONSUMER_GROUP)
    assert pending["pending"] == 1, "the entry read meanwhile lost its pending record"
    _, reclaimed = await store.reclaim("me", 0, 10)
    assert len(reclaimed) == 1
