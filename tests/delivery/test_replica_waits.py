"""Workers' waits for replicas: when to wait, when to only probe, what to log (a fixed
``now``), and that a Redis without ``WAIT`` (fakeredis) never stops the work."""

from __future__ import annotations

import fakeredis
import pytest
from prometheus_client import CollectorRegistry

from forwarder.protocol import RedisKeys
from forwarder.replicas import Replicas
from tests.delivery.events import START, publish
from workers.delivery.fold import plan_fold
from workers.delivery.replication import PROBE_EVERY_S, SHORTFALL_LOG_INTERVAL_S, ReplicaWaits
from workers.delivery.store import Store
from workers.ops.metrics import PrometheusObserver
from workers.ops.replication import describe, from_info


def test_replicas_that_keep_up_get_the_full_wait_every_time() -> None:
    """While every write is acknowledged, each waits up to the full timeout."""
    waits = ReplicaWaits(Replicas(1, 500))
    for now in (0.0, 0.001, 0.002):
        assert waits.timeout_ms(now) == 500
        assert waits.record(1, "fold", now) is None


def test_after_a_shortfall_only_one_write_a_second_waits() -> None:
    """After a shortfall writes skip WAIT, bar a probe per second; an acknowledged probe
    ends it."""
    waits = ReplicaWaits(Replicas(1, 500))
    assert waits.timeout_ms(10.0) == 500
    assert waits.record(0, "fold", 10.5) is not None
    assert waits.timeout_ms(10.6) is None
    assert waits.timeout_ms(10.0 + PROBE_EVERY_S) == 500  # the probe
    waits.record(0, "settle", 11.5)
    assert waits.timeout_ms(11.6) is None
    assert waits.timeout_ms(12.0 + PROBE_EVERY_S) == 500
    assert waits.record(1, "settle", 13.1) is None
    assert waits.timeout_ms(13.2) == 500


def test_shortfalls_make_one_line_per_interval_with_their_counts() -> None:
    """The first shortfall is written at once; the next line comes an interval later and
    counts what happened since, by operation."""
    waits = ReplicaWaits(Replicas(2, 500))
    first = waits.record(1, "fold", 0.0)
    assert first is not None
    assert "only 1 of 2 replica(s) acknowledged a write" in first
    assert "1 fold" in first
    for now in (1.0, 2.0, 3.0):
        assert waits.record(0, "settle", now) is None
    assert waits.record(1, "fold", 4.0) is None
    later = waits.record(0, "fold", SHORTFALL_LOG_INTERVAL_S)
    assert later is not None
    assert "2 fold, 3 settle" in later


@pytest.mark.anyio
async def test_a_redis_without_wait_never_stops_a_fold() -> None:
    """fakeredis refuses WAIT: the fold is stored and its reply returned, the shortfall
    counted (a worker's work never fails for replicas)."""
    client = fakeredis.FakeAsyncRedis()
    keys = RedisKeys("unit")
    shortfalls: list[str] = []
    store = Store(client, keys, Replicas(1, 100), shortfalls.append)
    await store.ensure_group()
    await publish(client, keys, START)
    entries = await store.read("c1", 10, None)
    result = await store.fold(plan_fold(entries), retention_ms=60_000, orphan_wait_ms=60_000)
    assert result.changed == 1
    assert await client.zcard(keys.due) == 1
    assert shortfalls == ["fold"]


def test_shortfalls_are_a_counter_by_operation() -> None:
    """``dora_forwarder_replica_shortfalls_total{operation}`` counts each short write."""
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    observer.replica_shortfall("fold")
    observer.replica_shortfall("fold")
    observer.replica_shortfall("settle")
    name = "dora_forwarder_replica_shortfalls_total"
    assert registry.get_sample_value(name, {"operation": "fold"}) == 2
    assert registry.get_sample_value(name, {"operation": "settle"}) == 1


def test_status_rows_say_when_replicas_are_too_few_or_the_server_is_one() -> None:
    """``status`` names the server and its replicas against the setting; a replica in
    FORWARDER_REDIS_URL is called out (writes fail there)."""
    primary = from_info(
        "10.0.0.1:6379",
        {
            "role": "master",
            "connected_slaves": 1,
            "slave0": {"ip": "10.0.0.2", "port": 6379, "state": "online", "lag": 0},
        },
        2,
    )
    rows = dict(describe(primary))
    assert rows["redis"] == "10.0.0.1:6379 (primary)"
    assert rows["replicas"].startswith("1 connected (10.0.0.2:6379 online, lag 0 s)")
    assert "TOO FEW" in rows["replicas"]
    replica = from_info(
        "10.0.0.2:6379",
        {
            "role": "slave",
            "master_host": "10.0.0.1",
            "master_port": 6379,
            "master_link_status": "up",
            "connected_slaves": 0,
        },
        0,
    )
    assert "a REPLICA of 10.0.0.1:6379 (link up)" in dict(describe(replica))["redis"]
