"""judge(): what the stand-in holds against what was published, deployments and DELETEs too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.stack import judge
from harness.standin import StandinServer

API_KEY = "judge-api-key"
APP_KEY = "judge-app-key"
STARTED_NS = 1_700_000_000_000_000_000
KEPT, DROPPED, NEVER = "deploy-judge-000001", "deploy-judge-000002", "deploy-judge-000003"
INCIDENT = "incident-judge-00001"
DEPLOYMENT = {
    "service": "shopist",
    "env": "prod",
    "finished_at": STARTED_NS + 60 * 10**9,
}
PATCH_TYPE = "dora_deployment_patch_request"
PATCHED = {"change_failure": True, "remediation": {"id": DROPPED, "type": "rollback"}}


@pytest.fixture
def api() -> Iterator[tuple[StandinServer, httpx.Client]]:
    with (
        StandinServer(API_KEY, app_key=APP_KEY) as standin,
        httpx.Client(
            base_url=standin.url, headers={"DD-API-KEY": API_KEY, "DD-APPLICATION-KEY": APP_KEY}
        ) as client,
    ):
        yield standin, client


def deployment(event_id: str, second: int) -> dict[str, Any]:
    return {"id": event_id, **DEPLOYMENT, "started_at": STARTED_NS + second * 10**9}


def post(client: httpx.Client, noun: str, attributes: dict[str, Any]) -> None:
    client.post(f"/api/v2/dora/{noun}", json={"data": {"attributes": attributes}})


def patch(client: httpx.Client, event_id: str) -> int:
    body = {"data": {"id": event_id, "type": PATCH_TYPE, "attributes": PATCHED}}
    return client.patch(f"/api/v2/dora/deployments/{event_id}", json=body).status_code


def test_patched_deleted_and_superseded_events_are_judged_by_what_the_api_holds(
    api: tuple[StandinServer, httpx.Client],
) -> None:
    standin, client = api
    incident = {"id": INCIDENT, "team": "ops", "started_at": STARTED_NS}
    post(client, "failure", incident)
    post(client, "deployment", deployment(KEPT, 0))
    assert patch(client, KEPT) == 202
    post(client, "deployment", deployment(DROPPED, 1))
    assert client.delete(f"/api/v2/dora/deployment/{DROPPED}").status_code == 202
    assert client.delete(f"/api/v2/dora/deployment/{NEVER}").status_code == 404

    received = judge(
        standin,
        {INCIDENT: incident},
        deployments={KEPT: {**deployment(KEPT, 0), **PATCHED}},
        deleted={"dora_deployment": {DROPPED, NEVER}},
    )

    assert received.lost == []
    assert received.delivered == 4
    assert received.superseded == 1  # NEVER: its DELETE came first
    assert received.patch_before_post == []
    assert received.resurrections == []
    assert received.duplicates == 0


def test_a_patch_before_its_post_a_resurrection_and_a_kept_deletion_are_found(
    api: tuple[StandinServer, httpx.Client],
) -> None:
    standin, client = api
    assert patch(client, KEPT) == 404  # the API does not hold it yet
    post(client, "deployment", deployment(KEPT, 0))
    post(client, "deployment", deployment(DROPPED, 1))
    client.delete(f"/api/v2/dora/deployment/{DROPPED}")
    post(client, "deployment", deployment(DROPPED, 1))  # POSTed again after its DELETE
    post(client, "deployment", deployment(DROPPED, 1))

    received = judge(
        standin,
        {},
        deployments={KEPT: {**deployment(KEPT, 0), **PATCHED}},
        deleted={"dora_deployment": {DROPPED}},
    )

    assert sorted(received.lost) == [KEPT, DROPPED]  # unpatched; still held
    assert received.delivered == 0
    assert received.patch_before_post == [KEPT]
    assert received.resurrections == [DROPPED]
    assert received.duplicates == 2  # the same body accepted three times
