"""End to end: publish → real Redis → real Celery worker processes → the stand-in API."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from forwarder import Publisher
from forwarder.protocol import RedisKeys
from harness import streams
from harness.stack import Worker, wait_until
from harness.standin import StandinServer

pytestmark = pytest.mark.integration

StartWorker = Callable[..., Worker]


def finished_everywhere(standin: StandinServer, ids: list[str]) -> bool:
    latest = standin.latest()
    return all("finished_at" in latest.get(i, {}) for i in ids)


def test_incidents_started_finished_and_duplicated_arrive_exact(
    start_worker: StartWorker, standin: StandinServer, publisher: Publisher
) -> None:
    """Every incident ends finished, duplicates cost nothing, nothing regresses."""
    start_worker()
    ids = [f"incident-{i:012d}" for i in range(400)]
    starts = [
        {"id": i, "started_at": 1_700_000_000, "services": ["api"], "env": "prod"} for i in ids
    ]
    finishes = [{"id": i, "finished_at": 1_700_000_900} for i in ids]
    publisher.publish_many(starts)
    publisher.publish_many(starts[::10])  # a tenth published twice
    publisher.publish_many(finishes)
    publisher.publish_many(finishes[::10])
    wait_until(lambda: finished_everywhere(standin, ids), timeout_s=30, what="all finishes")
    latest = standin.latest()
    assert set(latest) == set(ids)
    assert all(latest[i]["started_at"] == 1_700_000_000_000_000_000 for i in ids)
    assert all(latest[i]["finished_at"] == 1_700_000_900_000_000_000 for i in ids)
    assert standin.regressions() == []
    # At most one request per distinct state: a start and a finish per incident.
    assert len(standin.requests()) <= 2 * len(ids)


def test_finish_by_id_completes_a_derived_incident(
    start_worker: StartWorker, standin: StandinServer, publisher: Publisher
) -> None:
    """A start without an id gets a derived one; a finish naming it completes the incident."""
    start_worker()
    incident = publisher.incident_started(services=["checkout"], env="prod", severity="SEV-2")
    wait_until(lambda: incident in standin.latest(), timeout_s=20, what="the start")
    publisher.incident_finished(incident)
    wait_until(
        lambda: "finished_at" in standin.latest().get(incident, {}), timeout_s=20, what="the finish"
    )
    body = standin.latest()[incident]
    assert body["services"] == ["checkout"]
    assert body["severity"] == "SEV-2"
    assert body["finished_at"] >= body["started_at"]


def test_bad_request_lands_in_dead_letters_with_its_body(
    start_worker: StartWorker,
    standin: StandinServer,
    publisher: Publisher,
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """A 400 is dead-lettered with Datadog's response; a neighbour is still delivered."""
    start_worker()
    standin.respond_next(400, body={"errors": [{"status": "400", "detail": "no such team"}]})
    publisher.publish({"id": "incident-bad-000001", "started_at": 1_700_000_000, "team": "x"})
    wait_until(lambda: sync_redis.xlen(keys.dead) == 1, timeout_s=20, what="a dead letter")
    publisher.publish({"id": "incident-good-00001", "started_at": 1_700_000_000, "team": "y"})
    wait_until(
        lambda: "incident-good-00001" in standin.latest(), timeout_s=20, what="the good neighbour"
    )
    ((_, letter),) = streams.entries(sync_redis, keys.dead)
    assert letter[b"incident_id"] == b"incident-bad-000001"
    assert b"HTTP 400" in letter[b"reason"]
    assert "no such team" in json.loads(letter[b"detail"])["response"]


def test_server_errors_then_success_is_delivered(
    start_worker: StartWorker, standin: StandinServer, publisher: Publisher
) -> None:
    """5xx answers and a dropped connection are retried until the incident is accepted."""
    start_worker()
    standin.respond_next(503, count=2)
    standin.respond_next(500)
    standin.drop_next(1)
    incident = publisher.incident_started(team="payments", id="incident-retry-0001")
    wait_until(lambda: incident in standin.latest(), timeout_s=30, what="delivery after 5xx")
    statuses = [r.status for r in standin.requests()]
    assert sorted(statuses) == [0, 202, 500, 503, 503]  # 0: the dropped connection
    assert statuses[-1] == 202


def test_garbage_next_to_good_entries(
    start_worker: StartWorker,
    standin: StandinServer,
    publisher: Publisher,
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """Raw garbage in the stream becomes dead letters; good entries around it arrive."""
    start_worker()
    sync_redis.xadd(keys.ingest, {"v": "1", "kind": "failure", "event": "not json"})
    publisher.incident_started(team="a", id="incident-after-garbage")
    sync_redis.xadd(keys.ingest, {"hello": "world"})
    sync_redis.xadd(
        keys.ingest,
        {"v": "1", "kind": "failure", "event": json.dumps({"started_at": 1_700_000_000})},
    )
    wait_until(
        lambda: "incident-after-garbage" in standin.latest(), timeout_s=20, what="the good entry"
    )
    wait_until(lambda: sync_redis.xlen(keys.dead) == 3, timeout_s=20, what="3 dead letters")
    reasons = sorted(f[b"reason"].decode() for _, f in streams.entries(sync_redis, keys.dead))
    assert any("not valid JSON" in r for r in reasons)
    assert any("unknown entry format version None" in r for r in reasons)
    assert any("services: either services or team is required" in r for r in reasons)


def test_raw_xadd_producer_is_understood(
    start_worker: StartWorker,
    standin: StandinServer,
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """An entry written with plain XADD (as from redis-cli) and second timestamps arrives."""
    start_worker()
    body = {
        "data": {"attributes": {"started_at": 1_700_000_000, "services": ["cli"], "env": "prod"}}
    }
    sync_redis.xadd(keys.ingest, {"v": "1", "kind": "failure", "event": json.dumps(body)})
    wait_until(standin.latest, timeout_s=20, what="the raw entry")
    ((incident, attributes),) = standin.latest().items()
    assert incident.startswith("dora-")
    assert attributes["started_at"] == 1_700_000_000_000_000_000


def test_separate_worker_and_beat_processes(
    start_worker: StartWorker, standin: StandinServer, publisher: Publisher
) -> None:
    """`celery -A workers worker` and `celery -A workers beat` work as two processes."""
    start_worker("worker", "--concurrency=1")
    start_worker("beat")
    incident = publisher.incident_started(team="ops", id="incident-split-00001")
    wait_until(lambda: incident in standin.latest(), timeout_s=30, what="delivery")


def test_worker_refuses_to_start_without_api_key(start_worker: StartWorker) -> None:
    """Without DD_API_KEY the worker exits at once, saying what to set."""
    worker = start_worker(key=None)
    code = worker.process.wait(60)
    assert code != 0
    assert "DD_API_KEY is not set" in worker.log()


def test_worker_warns_when_redis_keeps_nothing_on_disk(
    start_worker: StartWorker,
    standin: StandinServer,
    publisher: Publisher,
    sync_redis: redis.Redis,
) -> None:
    """A worker on a memory-only Redis says at start that a restart would lose events."""
    durable = sync_redis.info("persistence")["aof_enabled"] or sync_redis.config_get("save")["save"]
    worker = start_worker()
    incident = publisher.incident_started(team="ops", id="incident-preflight-01")
    wait_until(lambda: incident in standin.latest(), timeout_s=20, what="delivery")
    warned = "Redis keeps nothing on disk" in worker.log()
    assert warned is not bool(durable)


def test_answers_slower_than_the_timeout_are_retried(
    start_worker: StartWorker,
    standin: StandinServer,
    publisher: Publisher,
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """A request that times out is retried, and delivered once the API answers in time."""
    standin.latency_s = 3.0
    start_worker(FORWARDER_HTTP_TIMEOUT_S="1")
    incident = publisher.incident_started(team="ops", id="incident-slow-000001")
    last_error = wait_until(
        lambda: sync_redis.hget(keys.incident(incident), "last_error"),
        timeout_s=20,
        what="a timed-out attempt",
    )
    assert b"network error" in last_error
    standin.latency_s = 0.0
    wait_until(lambda: incident in standin.latest(), timeout_s=30, what="delivery")
