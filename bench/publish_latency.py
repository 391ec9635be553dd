"""What replicated acknowledgement costs: publish latency, and a worker's folds and
settlements, with ``FORWARDER_PUBLISH_REPLICAS`` 0 and 1, on a primary and a replica of our
own on loopback (fresh redis-server processes: nothing else is touched).

For each setting: ``--publishes`` single ``Publisher.publish`` calls one after the other
(median, p99, max in ms, and the rate), then ``publish_many`` of ``--batch`` events; then a
worker's ``Store``: ``--incidents`` incidents folded ``--batch`` at a time, claimed and
settled as delivered the same way (median and p99 per call). Both servers run with AOF
``appendfsync everysec`` (the compose file's) unless ``--fsync always``.

    python -m bench.publish_latency --publishes 5000 --incidents 5000

Figures vary with the machine; compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from forwarder import Publisher, to_event
from forwarder.entry import encode_entry
from forwarder.protocol import RedisKeys
from forwarder.replicas import Replicas
from harness.replication import ReplicatedRedis
from workers.delivery.fold import plan_fold
from workers.delivery.gate import GateUpdate
from workers.delivery.records import Settlement, Verdict
from workers.delivery.store import Store

TIMEOUT_S = 0.5


def _ms(samples: Sequence[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"median {statistics.median(ordered) * 1000:6.3f} ms  p99 {p99 * 1000:6.3f} ms  "
        f"max {ordered[-1] * 1000:6.3f} ms"
    )


def _timed(call: Callable[[], Any], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def incident(number: int) -> dict[str, Any]:
    return {"id": f"bench-replicas-{number:010d}", "started_at": 1_700_000_000, "team": "bench"}


def publishing(url: str, replicas: int, publishes: int, batch: int) -> list[str]:
    keys = RedisKeys(f"bench-{uuid.uuid4().hex[:8]}")
    counter = iter(range(10**9))
    with Publisher.from_url(
        url, key_prefix=keys.prefix, replicas=replicas, replicas_timeout_s=TIMEOUT_S
    ) as publisher:
        _timed(lambda: publisher.publish(incident(next(counter))), 200)  # warm up
        started = time.perf_counter()
        single = _timed(lambda: publisher.publish(incident(next(counter))), publishes)
        rate = publishes / (time.perf_counter() - started)
        many = _timed(
            lambda: publisher.publish_many([incident(next(counter)) for _ in range(batch)]),
            max(1, publishes // batch),
        )
    return [
        f"publish           {_ms(single)}  ({rate:,.0f}/s one after the other)",
        f"publish_many({batch}) {_ms(many)}",
    ]


async def working(url: str, replicas: int, incidents: int, batch: int) -> list[str]:
    keys = RedisKeys(f"bench-{uuid.uuid4().hex[:8]}")
    client = aioredis.Redis.from_url(url, socket_timeout=10)
    store = Store(client, keys, Replicas.of(replicas, TIMEOUT_S))
    await store.ensure_group()
    # The API is known to announce no limits: claims take a whole batch, not one probe.
    await client.hset(keys.gate, "unlimited_ms", 2**53)
    pipe = client.pipeline(transaction=False)
    for number in range(incidents):
        pipe.xadd(keys.ingest, encode_entry(to_event(incident(number))))
    await pipe.execute()
    folds, settles = [], []
    while entries := await store.read("bench", batch, None):
        started = time.perf_counter()
        await store.fold(plan_fold(entries), retention_ms=3_600_000, orphan_wait_ms=60_000)
        folds.append(time.perf_counter() - started)
    while claims := (await store.claim(batch, 60_000, "bench", probe_ms=5_000)).claims:
        settlements = [Settlement(c.incident_id, c.version, Verdict.DELIVERED) for c in claims]
        started = time.perf_counter()
        await store.settle("bench", settlements, GateUpdate(unlimited=True, answered=True))
        settles.append(time.perf_counter() - started)
    await client.aclose()
    return [
        f"fold({batch})         {_ms(folds)}",
        f"settle({batch})       {_ms(settles)}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publishes", type=int, default=5_000)
    parser.add_argument("--incidents", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--fsync", choices=("everysec", "always"), default="everysec")
    args = parser.parse_args(argv)
    pair = ReplicatedRedis().start()
    try:
        for server in (pair.primary, pair.replica):
            with redis.Redis.from_url(server.url) as client:
                client.config_set("appendfsync", args.fsync)
        print(
            f"primary 127.0.0.1:{pair.primary.port}, replica 127.0.0.1:{pair.replica.port}, "
            f"appendfsync {args.fsync}, WAIT timeout {TIMEOUT_S} s"
        )
        for replicas in (0, 1):
            print(f"\nFORWARDER_PUBLISH_REPLICAS={replicas}")
            lines = publishing(pair.url, replicas, args.publishes, args.batch)
            lines += asyncio.run(working(pair.url, replicas, args.incidents, args.batch))
            for line in lines:
                print("  " + line)
    finally:
        pair.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
