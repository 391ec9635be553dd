"""``dora-forwarder publish --kind``: every kind of entry, each line held to its model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import redis

from forwarder import (
    DeploymentDeletion,
    DeploymentPatch,
    DeploymentPatchByVersion,
    IncidentDeletion,
    Remediation,
    RemediationType,
)
from forwarder.entry import decode_entry
from forwarder.protocol import RedisKeys
from harness import streams
from workers.cli import main

pytestmark = pytest.mark.usefixtures("redis_env")

ROLLBACK = {"id": "eG42zNIkVjM", "type": "rollback"}


def lines(tmp_path: Path, *items: Any) -> str:
    """A JSON-lines file of ``items`` (a str is written as it is)."""
    path = tmp_path / "lines.jsonl"
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items))
    return str(path)


def enqueued(client: redis.Redis, keys: RedisKeys) -> list[object]:
    return [decode_entry(fields) for _, fields in streams.entries(client, keys.ingest)]


def test_deployment_patch_lines_bare_or_as_datadogs_body(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """Bare attributes with an id, or Datadog's PATCH body whose data.id names the deployment."""
    path = lines(
        tmp_path,
        {"id": "deployment-00000001", "change_failure": True, "remediation": ROLLBACK},
        {
            "data": {
                "id": "z_RwVLi7v4Y",
                "type": "dora_deployment_patch_request",
                "attributes": {"change_failure": False},
            }
        },
    )
    assert main(["publish", "--kind", "deployment_patch", path]) == 0
    assert "published 2 event(s)" in capsys.readouterr().err
    assert enqueued(sync_redis, keys) == [
        DeploymentPatch(
            id="deployment-00000001",
            change_failure=True,
            remediation=Remediation(id="eG42zNIkVjM", type=RemediationType.ROLLBACK),
        ),
        DeploymentPatch(id="z_RwVLi7v4Y", change_failure=False),
    ]


@pytest.mark.parametrize(
    ("kind", "model"),
    [("deployment_delete", DeploymentDeletion), ("failure_delete", IncidentDeletion)],
)
def test_delete_lines(
    tmp_path: Path,
    sync_redis: redis.Redis,
    keys: RedisKeys,
    kind: str,
    model: type[DeploymentDeletion | IncidentDeletion],
) -> None:
    """One id a line: one deletion entry each."""
    path = lines(tmp_path, {"id": "z_RwVLi7v4Y"}, {"id": "incident-00000001"})
    assert main(["publish", "--kind", kind, path]) == 0
    assert enqueued(sync_redis, keys) == [model(id="z_RwVLi7v4Y"), model(id="incident-00000001")]


def test_bad_lines_of_an_operation_are_named_and_the_rest_enqueued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """Each bad line with its number, field and reason; exit code 1; good lines kept."""
    path = lines(
        tmp_path,
        {"id": "deployment-00000001", "change_failure": True},
        {"id": "deployment-00000001"},
        {"id": "a/b", "change_failure": True},
        {"id": "deployment-00000001", "change_failure": True, "remediation": {"type": "rollback"}},
        {"id": "deployment-00000001", "change_failure": True, "started_at": 1},
        "{not json",
    )
    assert main(["publish", "--kind", "deployment_patch", path]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: change_failure: is required" in err
    assert f"{path}:3: id: must be 1-128 characters" in err
    assert f"{path}:4: remediation: remediation names its deployment by id or by version" in err
    assert f"{path}:5: started_at: is not a field Datadog accepts" in err
    assert f"{path}:6: not valid JSON" in err
    assert "published 1 event(s)" in err
    assert len(enqueued(sync_redis, keys)) == 1


BY_VERSION: dict[str, Any] = {
    "service": "checkout",
    "env": "prod",
    "version": "v1.12.7",
    "change_failure": True,
}


def test_by_version_is_refused_unless_turned_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """Off by default: exit code 2 before any line is read, naming the setting."""
    path = lines(tmp_path, BY_VERSION)
    assert main(["publish", "--kind", "deployment_patch_by_version", path]) == 2
    err = capsys.readouterr().err
    assert "PATCH by version is a Datadog preview" in err
    assert "FORWARDER_PATCH_BY_VERSION=true" in err
    assert "--kind deployment_patch" in err
    assert enqueued(sync_redis, keys) == []


def test_by_version_is_enqueued_where_turned_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """FORWARDER_PATCH_BY_VERSION=true: its lines are enqueued."""
    monkeypatch.setenv("FORWARDER_PATCH_BY_VERSION", "true")
    path = lines(tmp_path, BY_VERSION)
    assert main(["publish", "--kind", "deployment_patch_by_version", path]) == 0
    assert enqueued(sync_redis, keys) == [DeploymentPatchByVersion(**BY_VERSION)]


def test_unversioned_deployments_are_warned_of_once_per_service(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """Deployments without version or git are enqueued, with one warning per service."""
    caplog.set_level(logging.WARNING, logger="dora_forwarder.publish")
    deployment = {"service": "checkout", "started_at": 1_700_000_000, "finished_at": 1_700_000_090}
    path = lines(tmp_path, deployment, {**deployment, "started_at": 1_700_000_010})
    assert main(["publish", "--kind", "deployment", path]) == 0
    assert len(enqueued(sync_redis, keys)) == 2
    (record,) = caplog.records
    assert "service 'checkout' has neither version nor git" in record.getMessage()
