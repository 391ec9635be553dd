"""Publishing into real Redis: one entry per event, clear errors, bounded waits."""

from __future__ import annotations

import json
import socket
import time

import pytest
import redis

import forwarder
from forwarder import InvalidEventError, InvalidEventsError, Publisher, PublishError
from forwarder.protocol import RedisKeys
from harness import streams

START = {"started_at": 1_700_000_000, "services": ["api"], "env": "prod"}


def entries(client: redis.Redis, keys: RedisKeys) -> list[dict[str, object]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in streams.entries(client, keys.ingest)
    ]


def test_publish_writes_one_versioned_entry(
    publisher: Publisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """One XADD with the format version, the kind and the normalised attributes."""
    incident = publisher.publish(START)
    (entry,) = entries(sync_redis, keys)
    assert entry["v"] == "1"
    assert entry["kind"] == "failure"
    event = json.loads(str(entry["event"]))
    assert event == {**START, "started_at": 1_700_000_000_000_000_000, "id": incident}


def test_invalid_event_enqueues_nothing(
    publisher: Publisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """A bad event raises with field and reason, and the stream stays empty."""
    with pytest.raises(InvalidEventError, match="services: either services or team"):
        publisher.publish({"started_at": 1_700_000_000})
    assert sync_redis.xlen(keys.ingest) == 0


def test_publish_many_keeps_valid_neighbours(
    publisher: Publisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """Valid events are enqueued even when others in the batch are bad; all bad ones named."""
    with pytest.raises(InvalidEventsError) as caught:
        publisher.publish_many([START, {"colour": "red"}, {**START, "env": "dev"}, {}])
    error = caught.value
    assert [f.index for f in error.failures] == [1, 3]
    assert len(error.published) == 2
    assert "event 1: colour: is not a field Datadog accepts" in str(error)
    assert sync_redis.xlen(keys.ingest) == 2


def test_many_bad_events_keep_the_message_readable(publisher: Publisher) -> None:
    """Hundreds of bad events: the message names a few, the exception holds them all."""
    with pytest.raises(InvalidEventsError) as caught:
        publisher.publish_many([{"colour": i} for i in range(300)])
    assert len(caught.value.failures) == 300
    assert str(caught.value).endswith("... and 295 more (all in .failures)")
    assert len(str(caught.value)) < 1_000


def test_publish_many_returns_ids_in_order(
    publisher: Publisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """Ids come back in the order of the events given."""
    ids = publisher.publish_many([{**START, "id": f"incident-{i:012d}"} for i in range(5)])
    assert ids == [f"incident-{i:012d}" for i in range(5)]
    assert sync_redis.xlen(keys.ingest) == 5


def test_helpers_fill_in_now(
    publisher: Publisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """incident_started and incident_finished default their timestamps to now."""
    before = time.time_ns()
    incident = publisher.incident_started(team="payments", severity="SEV-1")
    publisher.incident_finished(incident)
    after = time.time_ns()
    start, finish = (json.loads(str(e["event"])) for e in entries(sync_redis, keys))
    assert before <= start["started_at"] <= finish["finished_at"] <= after
    assert finish == {"id": incident, "finished_at": finish["finished_at"]}


def test_unreachable_redis_raises_publish_error() -> None:
    """Nothing listening: a PublishError, not a hang or a redis-py exception."""
    with (
        Publisher.from_url("redis://127.0.0.1:1/0", timeout_s=0.2) as publisher,
        pytest.raises(PublishError, match="could not enqueue"),
    ):
        publisher.publish(START)


def test_silent_redis_raises_within_the_timeout() -> None:
    """A server that accepts but never answers ends in a PublishError, not a hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with (
            Publisher.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.2) as publisher,
            pytest.raises(PublishError),
        ):
            publisher.publish(START)


def test_exported_names_do_not_drift() -> None:
    """The producer API is exactly what the README documents, sorted."""
    assert forwarder.__all__ == sorted(forwarder.__all__)
    assert set(forwarder.__all__) == {
        "DeploymentDeletion",
        "DeploymentEvent",
        "DeploymentPatch",
        "DeploymentPatchByVersion",
        "DrainReport",
        "IncidentDeletion",
        "Operation",
        "Remediation",
        "RemediationType",
        "Event",
        "FieldError",
        "ForwarderError",
        "GitInfo",
        "IncidentEvent",
        "InvalidEventError",
        "InvalidEventsError",
        "PublishError",
        "Published",
        "Publisher",
        "ReplicaShortfallError",
        "SpoolFullError",
        "derive_deployment_id",
        "derive_incident_id",
        "to_event",
    }


def test_producer_package_never_imports_celery() -> None:
    """Services importing forwarder do not pull in Celery."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = "import sys, forwarder; sys.exit('celery' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
