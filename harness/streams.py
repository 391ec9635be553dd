"""Stream entries typed as tests and benchmarks read them: what was written, what is there.

redis-py types an ``XRANGE`` reply for either ``decode_responses`` setting and as possibly
``None``; the clients here never decode, and ``XRANGE`` answers a list, so the reply is what
these functions say it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias, cast

import redis
import redis.asyncio as aioredis

from forwarder import Event
from forwarder.entry import encode_entry

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

Entry: TypeAlias = tuple[bytes, dict[bytes, bytes]]
"""One stream entry: its id and its fields, as bytes."""


def entry_fields(event: Event) -> dict[str, str]:
    """``encode_entry(event)``: str names and values (it is typed as XADD takes fields)."""
    return cast(dict[str, str], encode_entry(event))


def entries(client: redis.Redis, key: str) -> list[Entry]:
    """Every entry of the stream at ``key``, oldest first (empty when there is no stream)."""
    return cast(list[Entry], client.xrange(key))


async def entries_async(client: aioredis.Redis, key: str) -> list[Entry]:
    """``entries`` on an asyncio client."""
    return cast(list[Entry], await client.xrange(key))


def add(client: redis.Redis, key: str, fields: Mapping[bytes, bytes] | Mapping[str, str]) -> bytes:
    """``XADD key * fields``: raw bytes or text fields (redis-py types XADD's dict invariantly)."""
    return cast(bytes, client.xadd(key, cast("dict[FieldT, EncodableT]", dict(fields))))
