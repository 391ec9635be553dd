"""One incident's start and finish, and how the delivery tests put events in the ingest stream."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import RedisKeys
from harness import streams

ID = "incident-0000000001"
START = {"id": ID, "started_at": 1_700_000_000, "services": ["checkout"], "env": "prod"}
FINISH = {"id": ID, "finished_at": 1_700_000_600}


def entry(entry_id: str, data: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A stream entry as the store reads it: its id and the fields a producer wrote."""
    return entry_id, streams.entry_fields(to_event(data))


async def publish(client: aioredis.Redis, keys: RedisKeys, *events: dict[str, Any]) -> None:
    """XADD each event to the ingest stream, encoded as every producer does."""
    for event in events:
        await client.xadd(keys.ingest, encode_entry(to_event(event)))
