"""Deployment events: the model, publishing, folding apart from incidents, and delivery."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from forwarder import (
    DeploymentEvent,
    InvalidEventError,
    Publisher,
    derive_deployment_id,
    to_event,
)
from forwarder.entry import decode_entry, encode_entry
from forwarder.protocol import KIND_DEPLOYMENT, RedisKeys, parse_state_id, state_id
from harness import streams
from harness.stack import Worker, wait_until
from harness.standin import StandinServer
from tests.delivery.fake_api import FakeDatadog, make_pump
from workers.cli import main
from workers.delivery.fold import plan_fold
from workers.ops.dead_letters import list_letters, replay

SHA = "66adc9350f2cc9b250b69abddab733dd55e1a588"
ID = "deployment-00000000001"
DEPLOYMENT = {
    "id": ID,
    "service": "checkout",
    "started_at": 1_700_000_000,
    "finished_at": 1_700_000_090,
    "env": "prod",
    "version": "v1.2.3",
    "git": {"repository_url": "https://github.com/acme/checkout", "commit_sha": SHA},
}


def deployment(**changes: Any) -> dict[str, Any]:
    return {k: v for k, v in {**DEPLOYMENT, **changes}.items() if v is not None}


# --- the model ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (deployment(service=None), "service", "is required"),
        (deployment(started_at=None), "started_at", "is required"),
        (deployment(finished_at=None), "finished_at", "is required"),
        (deployment(finished_at=1_699_999_999), "finished_at", "is before started_at"),
        (deployment(services=["x"]), "services", "is not a field Datadog accepts"),
        (deployment(id="short"), "id", "must be 16-128 characters"),
        (deployment(git={"repository_url": "u", "commit_sha": "abc"}), "git.commit_sha", "full"),
    ],
)
def test_invalid_deployments_name_field_and_reason(
    data: dict[str, Any], field: str, reason: str
) -> None:
    """Datadog's rules for deployments: service, started_at and finished_at required, and more."""
    with pytest.raises(InvalidEventError) as caught:
        to_event(data, KIND_DEPLOYMENT)
    assert any(e.field == field and reason in e.reason for e in caught.value.errors), str(
        caught.value
    )


def test_deployment_attributes_are_nanoseconds_with_an_id() -> None:
    """Times become ns; without an id one is derived from service + env + started_at."""
    event = to_event(deployment(id=None), KIND_DEPLOYMENT)
    assert isinstance(event, DeploymentEvent)
    attributes = event.attributes()
    assert attributes["started_at"] == 1_700_000_000_000_000_000
    assert attributes["finished_at"] == 1_700_000_090_000_000_000
    expected = derive_deployment_id(
        started_at_ns=1_700_000_000_000_000_000, env="prod", service="checkout"
    )
    assert attributes["id"] == event.event_id == expected
    other_env = to_event(deployment(id=None, env="staging"), KIND_DEPLOYMENT)
    assert other_env.event_id != expected


def test_entry_round_trip_keeps_the_kind() -> None:
    """A deployment's stream entry says kind=deployment and decodes to a deployment."""
    entry = streams.entry_fields(to_event(deployment(), KIND_DEPLOYMENT))
    assert entry["kind"] == "deployment"
    decoded = decode_entry(entry)
    assert isinstance(decoded, DeploymentEvent)
    assert decoded.attributes() == to_event(deployment(), KIND_DEPLOYMENT).attributes()


def test_unknown_kind_is_a_dead_letter_reason() -> None:
    """An entry of a kind no worker knows says which kinds exist."""
    entry = {**streams.entry_fields(to_event(deployment(), KIND_DEPLOYMENT)), "kind": "release"}
    with pytest.raises(ValueError, match="unknown event kind 'release'"):
        decode_entry(entry)


# --- folding: one state per kind and id ---------------------------------------------------


def test_deployment_and_incident_with_one_id_stay_apart() -> None:
    """An incident and a deployment that share an id are two states, never merged."""
    incident = {"id": ID, "started_at": 1_700_000_000, "services": ["checkout"]}
    plan = plan_fold(
        [
            ("1-0", streams.entry_fields(to_event(incident))),
            ("2-0", streams.entry_fields(to_event(deployment(), KIND_DEPLOYMENT))),
        ]
    )
    names = sorted(update.incident_id for update in plan.updates)
    assert names == [ID, state_id(KIND_DEPLOYMENT, ID)]
    assert parse_state_id(state_id(KIND_DEPLOYMENT, ID)) == (KIND_DEPLOYMENT, ID)
    assert parse_state_id(ID) == ("failure", ID)


# --- publishing and delivering ------------------------------------------------------------


def test_publisher_deployment_enqueues_a_deployment_entry(
    redis_url: str, prefix: str, keys: RedisKeys, sync_redis: redis.Redis
) -> None:
    """Publisher.deployment validates and enqueues one entry of kind deployment."""
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        returned = publisher.deployment(
            service="checkout", started_at=1_700_000_000, finished_at=1_700_000_090, id=ID
        )
        with pytest.raises(InvalidEventError, match="finished_at"):
            publisher.deployment(service="checkout", started_at=1_700_000_000, finished_at=1)
    assert returned == ID
    ((_, fields),) = streams.entries(sync_redis, keys.ingest)
    assert fields[b"kind"] == b"deployment"
    assert json.loads(fields[b"event"])["service"] == "checkout"


@pytest.mark.usefixtures("redis_env")
def test_cli_publishes_deployments_with_kind(
    keys: RedisKeys,
    sync_redis: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`publish --kind deployment` reads deployments; a bad line is named, the good one goes."""
    path = tmp_path / "deployments.jsonl"
    path.write_text(json.dumps(DEPLOYMENT) + "\n" + json.dumps(deployment(service=None)) + "\n")
    assert main(["publish", "--kind", "deployment", str(path)]) == 1
    assert f"{path}:2: service: is required" in capsys.readouterr().err
    ((_, fields),) = streams.entries(sync_redis, keys.ingest)
    assert fields[b"kind"] == b"deployment"


@pytest.mark.anyio
async def test_pump_posts_deployments_to_the_deployment_endpoint(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """A deployment goes to /api/v2/dora/deployment, an incident to /failure, one request each."""
    api = FakeDatadog()
    incident = {"id": ID, "started_at": 1_700_000_000, "services": ["checkout"]}
    await client.xadd(keys.ingest, encode_entry(to_event(deployment(), KIND_DEPLOYMENT)))
    await client.xadd(keys.ingest, encode_entry(to_event(incident)))
    report = await make_pump(client, keys, api).run(0.3)
    assert report.outcomes == {"delivered": 2}
    paths = sorted(request.url.path for request in api.requests)
    assert paths == ["/api/v2/dora/deployment", "/api/v2/dora/failure"]
    sent = {r.url.path: json.loads(r.content)["data"]["attributes"] for r in api.requests}
    assert sent["/api/v2/dora/deployment"]["service"] == "checkout"
    assert sent["/api/v2/dora/deployment"]["version"] == "v1.2.3"


@pytest.mark.integration
def test_worker_delivers_deployments_and_incidents_side_by_side(
    start_worker: Callable[..., Worker], standin: StandinServer, redis_url: str, prefix: str
) -> None:
    """Real workers: deployments reach the deployment endpoint, valid per Datadog's schema."""
    start_worker()
    ids = [f"deployment-{i:012d}" for i in range(20)]
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        for second, deployment_id in enumerate(ids):
            # One second each: Datadog keeps one deployment per service and second.
            publisher.deployment(
                service="checkout",
                started_at=1_700_000_000 + second,
                finished_at=1_700_000_090,
                id=deployment_id,
                env="prod",
            )
        incident = publisher.incident_started(services=["checkout"], id=ids[0])
    wait_until(
        lambda: set(standin.latest("dora_deployment")) == set(ids) and incident in standin.latest(),
        timeout_s=30,
        what="20 deployments and the incident",
    )
    sent = standin.latest("dora_deployment")[ids[3]]
    assert sent["finished_at"] == 1_700_000_090_000_000_000
    assert sent["service"] == "checkout"
    assert standin.status_counts() == {202: 21}, "every body passed the schema"


def test_dead_deployment_replays_as_a_deployment(
    redis_url: str, prefix: str, keys: RedisKeys, sync_redis: redis.Redis
) -> None:
    """Replaying a deployment's dead letter puts a deployment entry back, not an incident."""
    attributes = to_event(deployment(), KIND_DEPLOYMENT).attributes()
    sync_redis.xadd(
        keys.dead,
        {
            "source": "incident",
            "incident_id": state_id(KIND_DEPLOYMENT, ID),
            "reason": "rejected by Datadog (HTTP 400)",
            "detail": json.dumps({"attributes": attributes}),
            "at_ms": "0",
        },
    )
    letters = list_letters(sync_redis, keys)
    assert replay(sync_redis, keys, letters) == 1
    ((_, fields),) = streams.entries(sync_redis, keys.ingest)
    assert isinstance(decode_entry(fields), DeploymentEvent)
