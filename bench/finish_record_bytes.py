"""Bytes per incident of the finish record in Redis, and of the layout we did not pick.

The records are made by the real scripts: ``--incidents`` incidents are published, folded,
claimed and settled as delivered (start and finish together) on a redis-server of this
script's own (no persistence, nothing else in it). Then, for each layout, the server is
emptied, the same records are written that way alone, and ``used_memory`` before and after
gives the cost per incident, everything included (key, value, the keyspace's and the
expiry table's entries). ``MEMORY USAGE`` of the records is printed too.

Layouts:
- ``key per incident`` (what settle.lua writes): ``{dora}:finished:<id>``, a string with
  its own expiry. One GET finds it.
- ``hash per day``: ``{dora}:finished:<day>`` holding ``id -> record``, one EXPIRE per
  bucket. Measured at two daily rates (small buckets stay listpacks, large ones become hash
  tables). Finding a record by id then takes one HGET per day of the horizon (400).

    python -m bench.finish_record_bytes --incidents 20000

Talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio as aioredis

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import RedisKeys
from harness.stack import free_port, wait_until
from workers.delivery.fold import plan_fold
from workers.delivery.gate import GateUpdate
from workers.delivery.settlement import delivered
from workers.delivery.store import DEFAULT_FINISHED_RETENTION_MS, Store

KEYS = RedisKeys()
BATCH = 500
HORIZON_DAYS = 400


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server with nothing else in it and no persistence; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            wait_until(lambda: _answers(client), timeout_s=10, what="redis-server")
            client.close()
            yield url
        finally:
            process.terminate()
            process.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def incident_id(i: int) -> str:
    """An id of a typical length (29 characters)."""
    return f"inc-2025-06-01-checkout-{i:05d}"


async def make_records(url: str, incidents: int) -> dict[str, bytes]:
    """Deliver ``incidents`` finished incidents through the real scripts; their records."""
    client = aioredis.Redis.from_url(url)
    store = Store(client, KEYS)
    await store.ensure_group()
    await client.hset(KEYS.gate, "unlimited_ms", 10**15)
    for start in range(0, incidents, BATCH):
        ids = [incident_id(i) for i in range(start, min(start + BATCH, incidents))]
        pipe = client.pipeline(transaction=False)
        for i, event_id in enumerate(ids):
            started = 1_700_000_000 + start + i
            for event in (
                {"id": event_id, "started_at": started, "services": ["checkout"], "env": "prod"},
                {"id": event_id, "finished_at": started + 600},
            ):
                pipe.xadd(KEYS.ingest, encode_entry(to_event(event)))
        await pipe.execute()
        entries = await store.read("bench", 2 * BATCH, None)
        await store.fold(plan_fold(entries), retention_ms=60_000, orphan_wait_ms=60_000)
        claims = (await store.claim(BATCH, 60_000, "bench", probe_ms=1_000)).claims
        await store.settle("bench", [delivered(c) for c in claims], GateUpdate())
    records: dict[str, bytes] = {}
    for event_id in (incident_id(i) for i in range(incidents)):
        value = await client.get(KEYS.finished(event_id))
        if not isinstance(value, bytes):
            raise SystemExit(f"no finish record for {event_id}: the scripts did not write it")
        records[event_id] = value
    await client.aclose()
    return records


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def per_key(client: redis.Redis, records: dict[str, bytes]) -> tuple[float, float]:
    """(used_memory per incident, mean MEMORY USAGE) with one string key per incident."""
    client.flushall()
    before = used_memory(client)
    pipe = client.pipeline(transaction=False)
    for event_id, value in records.items():
        pipe.set(KEYS.finished(event_id), value, px=DEFAULT_FINISHED_RETENTION_MS)
    pipe.execute()
    after = used_memory(client)
    usage = sum(int(client.memory_usage(KEYS.finished(i)) or 0) for i in records)
    return (after - before) / len(records), usage / len(records)


def per_day(client: redis.Redis, records: dict[str, bytes], per_bucket: int) -> float:
    """used_memory per incident with ``per_bucket`` incidents in each day's hash."""
    client.flushall()
    before = used_memory(client)
    pipe = client.pipeline(transaction=False)
    for n, (event_id, value) in enumerate(records.items()):
        bucket = f"{KEYS.finished_prefix}day:{20_000 + n // per_bucket}"
        pipe.hset(bucket, event_id, value)
        if n % per_bucket == 0:
            pipe.expire(bucket, HORIZON_DAYS * 86_400)
    pipe.execute()
    return (used_memory(client) - before) / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=20_000)
    args = parser.parse_args()
    with private_redis() as url:
        records = asyncio.run(make_records(url, args.incidents))
        client = redis.Redis.from_url(url)
        sample = next(iter(records.values())).decode()
        key_bytes, usage = per_key(client, records)
        small = per_day(client, records, 25)
        large = per_day(client, records, 1_000)
        version = client.info("server")["redis_version"]
        client.close()
    print(f"redis {version}, {args.incidents} incidents, ids of {len(incident_id(0))} chars")
    print(f"record as settle.lua writes it ({len(sample)} bytes): {sample}")
    print("| layout | bytes per incident (used_memory) | MEMORY USAGE per key |")
    print("|---|---|---|")
    print(f"| key per incident, own expiry (chosen) | {key_bytes:.0f} | {usage:.0f} |")
    print(f"| hash per day, 25 incidents a day | {small:.0f} | |")
    print(f"| hash per day, 1000 incidents a day | {large:.0f} | |")


if __name__ == "__main__":
    main()
