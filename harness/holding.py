"""Make a real worker die holding stream entries: read by it, pending, never folded.

The worker must be alone on its Redis server (``RedisServer``): whether it waits on the
stream is read from ``CLIENT LIST``, which shows every client of the server.
"""

from __future__ import annotations

import os
import signal

import redis

from forwarder.protocol import CONSUMER_GROUP, RedisKeys
from harness.stack import Workers, wait_until


def blocked_on_the_stream(client: redis.Redis) -> bool:
    """Whether a client waits in XREADGROUP BLOCK (it then takes what is added next)."""
    return any(
        c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") for c in client.client_list()
    )


def die_holding(
    workers: Workers,
    client: redis.Redis,
    keys: RedisKeys,
    entries: list[dict[bytes, bytes]],
    **env: str,
) -> None:
    """Make a worker read ``entries`` and die (SIGKILL) before it can fold any of them.

    The worker (started with ``env``) is stopped (SIGSTOP) while it waits in XREADGROUP;
    the entries are added in one transaction, so Redis hands all of them to it at once
    (``FORWARDER_INGEST_BATCH`` must be at least their number); then it is killed.
    """
    for _ in range(5):
        worker = workers.start(**env)
        wait_until(lambda: blocked_on_the_stream(client), timeout_s=60, what="a blocked read")
        os.killpg(worker.process.pid, signal.SIGSTOP)
        pipe = client.pipeline(transaction=True)
        for fields in entries:
            pipe.xadd(keys.ingest, fields)  # type: ignore[arg-type]
        pipe.execute()
        worker.kill()
        if client.xpending(keys.ingest, CONSUMER_GROUP)["pending"] == len(entries):
            return
        client.delete(keys.ingest)  # the read timed out just before: start again
    raise AssertionError("no worker was caught waiting on the stream in 5 tries")
