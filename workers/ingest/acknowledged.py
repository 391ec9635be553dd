"""The edge's writes: events into the stream, all or none, acknowledged by enough replicas.

One pipeline on one connection, one round trip: ``MULTI``, the ``XADD``\\ s, ``EXEC`` (so a
delivery of several events is stored whole or not at all), then ``WAIT`` when
``FORWARDER_PUBLISH_REPLICAS`` asks for replicas. ``WAIT`` counts only the writes of its own
connection, which is why it cannot follow a transaction pipeline of redis-py's (that hands
its connection back at ``EXEC``) and why the transaction is spelt out here instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from forwarder.entry import Event, encode_entry
from forwarder.replicas import Replicas


async def enqueue(
    client: aioredis.Redis, stream: str, events: Sequence[Event], replicas: Replicas
) -> None:
    """Store ``events`` (all or none), then wait for ``replicas``.

    Raises redis-py's error when Redis refused or did not answer (nothing may be stored),
    ``PublishError`` (``ReplicaShortfallError``) when Redis stored them but too few replicas
    acknowledged them in time.
    """
    pipe = client.pipeline(transaction=False)
    atomic = len(events) > 1
    if atomic:
        pipe.execute_command("MULTI")
    for event in events:
        pipe.xadd(stream, encode_entry(event))
    if atomic:
        pipe.execute_command("EXEC")
    if replicas.wanted:
        pipe.wait(replicas.wanted, replicas.timeout_ms)
    replies = await pipe.execute(raise_on_error=False)
    acknowledged = replies.pop() if replicas.wanted else None
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply  # a refused XADD; in a transaction, nothing of it was stored
    if replicas.wanted:
        replicas.check(acknowledged)


async def confirm(client: aioredis.Redis, key: str, keep_s: int, replicas: Replicas) -> None:
    """Wait for ``replicas`` to hold the writes of a transaction made on another connection.

    redis-py's ``WATCH`` transaction hands its connection back at ``EXEC``. Redis replicates
    one stream of writes, in order: a replica that acknowledged a later write holds every
    earlier one. So ``key`` (written by the transaction) gets its expiry set again, the same
    ``keep_s``, and ``WAIT`` follows that write on this connection. Raises as ``enqueue``
    does; a ``key`` gone meanwhile (nothing written, nothing to count) is a shortfall of 0.
    """
    if not replicas.wanted:
        return
    pipe = client.pipeline(transaction=False)
    pipe.expire(key, keep_s)
    pipe.wait(replicas.wanted, replicas.timeout_ms)
    rewritten, acknowledged = await pipe.execute(raise_on_error=False)
    if isinstance(rewritten, Exception):
        raise rewritten
    replicas.check(acknowledged if rewritten else 0)
