"""Replicated acknowledgement against a real primary and replica of our own, on loopback.

``FORWARDER_PUBLISH_REPLICAS=1``: producers acknowledge an event only once the replica holds
it, and say so when it does not (the event stays stored: a retry is harmless); workers go on
delivering while the replica is down, and count the shortfall. A replica SIGSTOPped stays
connected but acknowledges nothing: the case that a ``WAIT`` sent on another connection than
the writes would miss (it would count the replica as up to date).
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from pydantic import SecretStr

from config import load_settings
from forwarder import Publisher, ReplicaShortfallError
from forwarder.protocol import RedisKeys
from forwarder.replicas import Replicas
from harness.replication import ReplicatedRedis
from tests.delivery.events import ID, START, publish
from tests.delivery.fake_api import API_KEY, FakeDatadog
from tests.ingest.sources.support import deliver, payload, serving, source_settings
from workers.cli.common import EXIT_FAILURE
from workers.cli.publish import cmd_publish
from workers.delivery.backoff import BackoffPolicy
from workers.delivery.fold import plan_fold
from workers.delivery.pump import Pump, PumpConfig
from workers.delivery.sender import DatadogSender
from workers.delivery.settlement import SettlementPolicy
from workers.delivery.store import Store
from workers.ops.status import read_status

TIMEOUT_S = 0.3
BUDGET_S = 1.0
INCIDENT = {"id": "incident-replicas-0001", "started_at": 1_700_000_000, "services": ["a"]}
FAILURE_BODY = (
    b'{"data": {"attributes": {"id": "incident-replicas-0002", "started_at": 1, "team": "t"}}}'
)


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicatedRedis]:
    """A primary and its replica for the module (tests that stop the replica bring it back)."""
    started = ReplicatedRedis().start()
    yield started
    started.stop()


@pytest.fixture
def prefix_keys() -> RedisKeys:
    return RedisKeys(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def primary(pair: ReplicatedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(pair.url)
    yield client
    client.close()


@pytest.fixture
def replica(pair: ReplicatedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(pair.replica.url)
    yield client
    client.close()


def publisher(pair: ReplicatedRedis, keys: RedisKeys) -> Publisher:
    return Publisher.from_url(
        pair.url, key_prefix=keys.prefix, replicas=1, replicas_timeout_s=TIMEOUT_S
    )


def test_publish_returns_once_the_replica_holds_the_event(
    pair: ReplicatedRedis, prefix_keys: RedisKeys, replica: redis.Redis
) -> None:
    """With replicas=1, the replica holds every event the moment publish returns."""
    with publisher(pair, prefix_keys) as producer:
        producer.publish(INCIDENT)
        assert replica.xlen(prefix_keys.ingest) == 1
        producer.publish_many([INCIDENT, INCIDENT, INCIDENT])
        assert replica.xlen(prefix_keys.ingest) == 4


def test_a_silent_replica_fails_the_publish_but_the_event_is_stored(
    pair: ReplicatedRedis, prefix_keys: RedisKeys, primary: redis.Redis, replica: redis.Redis
) -> None:
    """A frozen replica: PublishError within about the timeout, the event on the primary;
    once the replica is back, publishing again succeeds (and reaches it)."""
    with publisher(pair, prefix_keys) as producer:
        with pair.replica_frozen():
            started = time.monotonic()
            with pytest.raises(ReplicaShortfallError) as raised:
                producer.publish(INCIDENT)
            took_s = time.monotonic() - started
            assert primary.xlen(prefix_keys.ingest) == 1
            with pytest.raises(ReplicaShortfallError):
                producer.publish_many([INCIDENT, INCIDENT])
            assert primary.xlen(prefix_keys.ingest) == 3
        assert TIMEOUT_S * 0.9 <= took_s < TIMEOUT_S + 0.5
        assert (raised.value.acknowledged, raised.value.wanted) == (0, 1)
        assert "only 0 of 1 replica(s) acknowledged it within 300 ms" in str(raised.value)
        assert "a repeat is harmless" in str(raised.value)
        producer.publish(INCIDENT)
        assert replica.xlen(prefix_keys.ingest) == 4


def test_cli_publish_fails_short_of_replicas(
    pair: ReplicatedRedis, prefix_keys: RedisKeys, tmp_path: Any
) -> None:
    """``publish`` exits 2 naming the shortfall; the events are stored all the same."""
    lines = tmp_path / "events.jsonl"
    lines.write_text('{"id": "incident-replicas-cli1", "started_at": 1700000000, "team": "t"}\n')
    settings = load_settings(
        redis_url=pair.url,
        key_prefix=prefix_keys.prefix,
        publish_replicas=1,
        publish_replicas_timeout_s=TIMEOUT_S,
    )
    err = io.StringIO()
    assert cmd_publish(settings, str(lines), err) == 0, err.getvalue()
    with pair.replica_frozen():
        assert cmd_publish(settings, str(lines), err) == EXIT_FAILURE
    assert "only 0 of 1 replica(s) acknowledged" in err.getvalue()


@pytest.mark.anyio
async def test_serve_answers_503_short_of_replicas(
    pair: ReplicatedRedis, prefix_keys: RedisKeys, primary: redis.Redis
) -> None:
    """The endpoint and the sources (a transaction; GitLab's WATCH one) answer 503 with
    Retry-After and the reason while the replica is silent, 202 once it is back."""
    settings = source_settings(
        pair.url,
        prefix_keys.prefix,
        publish_replicas=1,
        publish_replicas_timeout_s=TIMEOUT_S,
        publish_timeout_s=1.0,
    )
    firing = payload("alertmanager_firing")
    for alert in firing["alerts"]:
        alert["labels"]["team"] = "t"  # two alerts: two events, one transaction
    headers = {"DD-API-KEY": settings.ingest_keys.get_secret_value()}  # type: ignore[union-attr]
    async with serving(settings) as http:
        with pair.replica_frozen():
            answers = [
                await http.post("/api/v2/dora/failure", content=FAILURE_BODY, headers=headers),
                await deliver(http, "alertmanager", firing),
                await deliver(http, "gitlab", payload("gitlab_deployment_running")),
            ]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "1"
            assert "replica(s) acknowledged" in answer.text
        stored = primary.xlen(prefix_keys.ingest)
        assert stored == 3  # the failure and both alerts: stored, only not replicated
        again = await http.post("/api/v2/dora/failure", content=FAILURE_BODY, headers=headers)
        assert again.status_code == 202
        assert (await deliver(http, "gitlab", payload("gitlab_deployment_running"))).is_success


def test_status_names_the_primary_and_counts_its_replicas(
    pair: ReplicatedRedis, prefix_keys: RedisKeys, primary: redis.Redis, replica: redis.Redis
) -> None:
    """``status`` reads which Redis it talks to, its role, and its connected replicas."""
    status = read_status(primary, prefix_keys, 15_000, replicas_wanted=1)
    assert status.replication.server == f"127.0.0.1:{pair.primary.port}"
    assert (status.replication.role, status.replication.connected_replicas) == ("master", 1)
    assert not status.replication.short
    assert "online" in status.replication.replicas[0]
    on_replica = read_status(replica, prefix_keys, 15_000).replication
    assert on_replica.role == "slave"
    assert on_replica.primary_of_replica == f"127.0.0.1:{pair.primary.port} (link up)"


def _pump(client: aioredis.Redis, keys: RedisKeys, api: FakeDatadog, shortfalls: list[str]) -> Pump:
    store = Store(client, keys, Replicas.of(1, TIMEOUT_S), shortfalls.append)
    sender = DatadogSender(
        base_url="https://api.example.test",
        api_key=SecretStr(API_KEY),
        timeout_s=5.0,
        transport=httpx.MockTransport(api),
    )
    policy = SettlementPolicy(
        backoff=BackoffPolicy(base_s=0.01, max_s=0.02),
        orphan_wait_ms=60_000,
        max_age_ms=3_600_000,
        auth_pause_s=60.0,
    )
    config = PumpConfig("c1", 50, 8, 30_000, 30_000, 3_600_000, policy)
    return Pump(store, sender, config)


@pytest.mark.anyio
async def test_worker_writes_reach_the_replica_and_survive_a_script_flush(
    pair: ReplicatedRedis, prefix_keys: RedisKeys, replica: redis.Redis
) -> None:
    """A fold with replicas=1 returns once the replica holds the state, even right after
    the scripts were flushed (NOSCRIPT: loaded again, nothing run twice)."""
    client = aioredis.Redis.from_url(pair.url)
    try:
        shortfalls: list[str] = []
        store = Store(client, prefix_keys, Replicas.of(1, TIMEOUT_S), shortfalls.append)
        await store.ensure_group()
        await publish(client, prefix_keys, START)
        await client.script_flush()
        entries = await store.read("c1", 10, None)
        result = await store.fold(plan_fold(entries), retention_ms=60_000, orphan_wait_ms=60_000)
        assert result.changed == 1
        assert replica.zrange(prefix_keys.due, 0, -1) == [ID.encode()]
        assert replica.xlen(prefix_keys.ingest) == 0
        assert shortfalls == []
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_worker_keeps_delivering_without_its_replica(
    pair: ReplicatedRedis, prefix_keys: RedisKeys, caplog: pytest.LogCaptureFixture
) -> None:
    """Replica killed: every incident is still delivered, each short write is counted, one
    WARNING says so, and only probes wait (the run would not end in its budget otherwise)."""
    caplog.set_level(logging.WARNING, logger="dora_forwarder.replication")
    client = aioredis.Redis.from_url(pair.url)
    api = FakeDatadog()
    shortfalls: list[str] = []
    pair.kill_replica()
    try:
        events = [
            {"id": f"incident-replicas-{i:06d}", "started_at": 1_700_000_000 + i, "team": "t"}
            for i in range(200)
        ]
        await publish(client, prefix_keys, *events)
        report = await _pump(client, prefix_keys, api, shortfalls).run(BUDGET_S)
        assert report.outcomes.get("delivered") == 200
        assert {body["id"] for body in api.bodies()} == {e["id"] for e in events}
        assert {"fold", "settle"} <= set(shortfalls)
        warnings = [r for r in caplog.records if "replica(s) acknowledged" in r.getMessage()]
        assert len(warnings) == 1
        # Had each of these writes waited the full timeout, the budget would not have done.
        assert len(shortfalls) * TIMEOUT_S > BUDGET_S
    finally:
        await client.aclose()
        pair.start_replica()
