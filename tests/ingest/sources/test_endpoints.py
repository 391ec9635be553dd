"""``POST /sources/<source>``: each system's published payload in, the events it means out.

Every delivery goes through the app in-process against real Redis; each test reads back the
ingest stream and decodes it as a worker does. What is deliberately ignored is a 200 that
says why; what cannot be mapped is a 400 naming the member; a re-sent notification makes
the same entry again (the fold merges it: the same id, the same state). Refusals and
secrets: test_refusals.py; GitLab's join in Redis: test_gitlab_join.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from forwarder import Event, to_event
from forwarder.protocol import KIND_DEPLOYMENT
from tests.ingest.sources.support import (
    deliver,
    payload,
    raw,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_env", "no_secret_logged")]

S = 10**9
FIRING_NS = 1_580_948_278_432_911_000
"""2020-02-06T00:17:58.432911368Z, as Python's ISO parser keeps it: to the microsecond."""
NAME = "High CPU Temperature: High CPU core temperature"
SHA = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
GITHUB_DEPLOYMENT = to_event(
    {
        "id": "github-deployment:github.com:145988746",
        "service": "Hello-World",
        "started_at": 1_557_933_653 * S,  # deployment.created_at
        "finished_at": 1_557_933_655 * S,  # deployment_status.created_at
        "env": "production",
        "version": "master",
        "git": {"repository_url": "https://github.com/Codertocat/Hello-World", "commit_sha": SHA},
    },
    KIND_DEPLOYMENT,
)


def firing(**labels: str) -> dict[str, Any]:
    """Alertmanager's published notification (two alerts), each alert with ``labels`` added."""
    document: dict[str, Any] = payload("alertmanager_firing")
    for alert in document["alerts"]:
        alert["labels"].update(labels)
    return document


def incident(fingerprint: str, **attributes: Any) -> Event:
    """An incident of the firing notification's alert ``fingerprint``, with ``attributes``."""
    expected: dict[str, Any] = {
        "id": f"alertmanager-{fingerprint}:{FIRING_NS}",
        "started_at": FIRING_NS,
        "name": NAME,
        "severity": "critical",
        **attributes,
    }
    event: Event = to_event(expected)
    return event


def accepted_ids(response: httpx.Response) -> list[str]:
    return [item["id"] for item in response.json()["accepted"]]


def only_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert (error["status"], error["title"]) == ("400", "Bad Request")
    return dict(error)


# --- 202: each source's own payload, mapped field by field ----------------------------------


async def test_alertmanager_firing_alerts_are_incident_starts(
    http: httpx.AsyncClient, stream: Any
) -> None:
    """Each alert of the group is one incident, its id from fingerprint and startsAt."""
    response = await deliver(
        http, "alertmanager", firing(service="checkout, payments", team="sre", env="prod")
    )
    assert response.status_code == 202, response.text
    owners = {"services": ["checkout", "payments"], "team": "sre", "env": "prod"}
    expected = [incident("a1bc48475b20e73d", **owners), incident("c2ea85182f28cbd9", **owners)]
    assert stream() == expected
    assert response.json() == {
        "accepted": [{"id": event.event_id, "kind": "failure"} for event in expected],
        "ignored": [],
        "refused": [],
    }


async def test_alertmanager_resolved_alert_is_its_incident_with_a_finish(
    http: httpx.AsyncClient, stream: Any
) -> None:
    """A resolved alert: the same id as its firing, with endsAt as the finish."""
    document = payload("alertmanager_resolved")
    document["alerts"][0]["labels"]["job"] = "node"  # the last label that names services
    document["alerts"][0]["endsAt"] = "2020-02-06T00:27:58Z"
    response = await deliver(http, "alertmanager", document)
    assert response.status_code == 202, response.text
    finish = {"services": ["node"], "finished_at": 1_580_948_878 * S}
    assert stream() == [incident("a1bc48475b20e73d", **finish)]


async def test_pagerduty_trigger_and_resolution(http: httpx.AsyncClient, stream: Any) -> None:
    """PagerDuty's recorded deliveries: a start (occurred_at, no created_at in them), and a
    finish alone; both byte for byte as PagerDuty signed them."""
    triggered = await deliver(http, "pagerduty", raw("pagerduty_incident_triggered"))
    resolved = await deliver(http, "pagerduty", raw("pagerduty_incident_resolved"))
    assert (triggered.status_code, resolved.status_code) == (202, 202)
    assert accepted_ids(triggered) == ["pagerduty-PFQZPSY"]
    assert accepted_ids(resolved) == ["pagerduty-PCPZE64"]
    start = {
        "id": "pagerduty-PFQZPSY",
        "started_at": 1_622_813_729_781_000_000,
        "services": ["pig208"],
        "name": "Test Incident 3",
        "severity": "high",
    }
    finish = {"id": "pagerduty-PCPZE64", "finished_at": 1_622_812_613_816_000_000}
    assert stream() == [to_event(start), to_event(finish)]


async def test_pagerduty_trigger_takes_created_at_priority_and_team(
    http: httpx.AsyncClient, stream: Any
) -> None:
    """PagerDuty's documented incident, as a trigger: created_at, priority P1, its team."""
    document = payload("pagerduty_incident_priority_updated")
    document["event"]["event_type"] = "incident.triggered"
    response = await deliver(http, "pagerduty", document)
    assert response.status_code == 202, response.text
    expected = {
        "id": "pagerduty-PGR0VU2",
        "started_at": 1_586_445_387 * S,
        "services": ["API Service"],
        "name": "A little bump in the road",
        "severity": "P1",
        "team": "Engineering",
    }
    assert stream() == [to_event(expected)]


async def test_github_success_is_a_deployment(http: httpx.AsyncClient, stream: Any) -> None:
    """octokit's deployment_status example, as GitHub signed it: one deployment."""
    response = await deliver(http, "github", raw("github_deployment_status_success"))
    assert response.status_code == 202, response.text
    assert response.json() == {
        "accepted": [{"id": "github-deployment:github.com:145988746", "kind": "deployment"}],
        "ignored": [],
        "refused": [],
    }
    assert stream() == [GITHUB_DEPLOYMENT]


@pytest.mark.parametrize("given", [{"service": "web"}, '{"service": "web", "x": 1}'])
async def test_github_deployment_payload_names_the_service(
    http: httpx.AsyncClient, stream: Any, given: Any
) -> None:
    """The deployment's payload (an object, or JSON text of one) names the service."""
    document = payload("github_deployment_status_success")
    document["deployment"]["payload"] = given
    assert (await deliver(http, "github", document)).status_code == 202
    assert stream() == [GITHUB_DEPLOYMENT.model_copy(update={"service": "web"})]


# --- 200: deliberately ignored, and said why ------------------------------------------------


@pytest.mark.parametrize(
    ("source", "body", "headers", "what"),
    [
        ("github", raw("github_ping"), {"X-GitHub-Event": "ping"}, "ping"),
        (
            "github",
            raw("github_deployment_status_in_progress"),
            {},
            "GitHub deployment 145988746 status 'in_progress'",
        ),
        ("github", b"{}", {"X-GitHub-Event": "push"}, "GitHub event 'push'"),
        (
            "pagerduty",
            raw("pagerduty_incident_acknowledged"),
            {},
            "PagerDuty event 'incident.acknowledged'",
        ),
        (
            "gitlab",
            raw("gitlab_deployment_success").replace(b'"success"', b'"canceled"'),
            {},
            "GitLab deployment 15 status 'canceled'",
        ),
        ("gitlab", b"{}", {"X-Gitlab-Event": "Push Hook"}, "GitLab event 'Push Hook'"),
        (
            "alertmanager",
            raw("alertmanager_firing"),  # no service, services, job or team label
            {},
            "alert a1bc48475b20e73d",
        ),
    ],
)
async def test_ignored_events_are_200_with_the_reason(
    http: httpx.AsyncClient,
    stream: Any,
    source: str,
    body: bytes,
    headers: dict[str, str],
    what: str,
) -> None:
    """Nothing enqueued; the answer names each item ignored, with a reason."""
    response = await deliver(http, source, body, headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == []
    assert answer["refused"] == []
    assert answer["ignored"], answer
    assert any(what in item["what"] for item in answer["ignored"]), answer
    assert all(item["reason"] for item in answer["ignored"])
    assert stream() == []


# --- 400: refused, naming what -----------------------------------------------------------


def _without(document: dict[str, Any], *path: str) -> dict[str, Any]:
    parent = document
    for name in path[:-1]:
        parent = parent[name]
    del parent[path[-1]]
    return document


def _resolved_at_zero() -> dict[str, Any]:
    """Alertmanager's resolved example as published: its endsAt is Go's zero time."""
    document: dict[str, Any] = payload("alertmanager_resolved")
    document["alerts"][0]["labels"]["service"] = "node"
    return document


@pytest.mark.parametrize(
    ("source", "body", "pointer", "detail"),
    [
        ("alertmanager", {**firing(service="a"), "version": "3"}, "/version", "version: must"),
        ("alertmanager", _resolved_at_zero(), "/alerts/0/endsAt", "alerts[0].endsAt: "),
        (
            "pagerduty",
            _without(payload("pagerduty_incident_triggered"), "event", "data", "service"),
            "/event/data/service",
            "event.data.service: is required",
        ),
        (
            "github",
            _without(payload("github_deployment_status_success"), "deployment", "sha"),
            "/deployment/sha",
            "deployment.sha: is required",
        ),
        (
            "gitlab",
            payload("gitlab_deployment_running") | {"status_changed_at": "yesterday"},
            "/status_changed_at",
            "status_changed_at: ",
        ),
        ("gitlab", b"[1, 2]", "", "the body: must be a JSON object"),
        ("github", b'{"deployment": ', "", "the body is not valid JSON"),
    ],
)
async def test_unmappable_payload_is_400_naming_the_member(
    http: httpx.AsyncClient,
    stream: Any,
    source: str,
    body: Any,
    pointer: str,
    detail: str,
) -> None:
    """One error, at the member that cannot be mapped; nothing enqueued."""
    error = only_error(await deliver(http, source, body))
    assert error["source"] == {"pointer": pointer}
    assert error["detail"].startswith(detail), error
    assert stream() == []


async def test_one_unmappable_alert_is_refused_and_its_neighbour_kept(
    http: httpx.AsyncClient, stream: Any
) -> None:
    """A group with one bad alert: 202 for the good one, the bad one named as refused."""
    document = firing(service="checkout")
    document["alerts"][1]["startsAt"] = "soon"
    response = await deliver(http, "alertmanager", document)
    assert response.status_code == 202, response.text
    assert stream() == [incident("a1bc48475b20e73d", services=["checkout"])]
    (refused,) = response.json()["refused"]
    assert refused["source"] == {"pointer": "/alerts/1/startsAt"}


# --- re-sent notifications --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "body"),
    [
        ("alertmanager", firing(team="sre")),
        ("pagerduty", payload("pagerduty_incident_triggered")),
        ("github", payload("github_deployment_status_success")),
        ("gitlab", payload("gitlab_deployment_success")),
    ],
)
async def test_a_resent_delivery_makes_the_same_entries_again(
    http: httpx.AsyncClient, stream: Any, source: str, body: Any
) -> None:
    """The same notification twice: the same answer, identical entries (one state later)."""
    first = await deliver(http, source, body)
    once = stream()
    second = await deliver(http, source, body)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json() == second.json()
    assert once
    assert stream() == once + once


# --- what the payload says, quoted back safely ------------------------------------------------


def _with_deployment_id(document: dict[str, Any], deployment_id: str) -> dict[str, Any]:
    document["deployment"]["id"] = deployment_id
    return document


@pytest.mark.parametrize(
    ("source", "body", "status", "shown"),
    [
        # A member's name with a lone surrogate, in an error's pointer (was a 500).
        ("alertmanager", {"version": "4", "alerts": [{"labels": {"\ud800": None}}]}, 400, None),
        # An id with one, in what an answer says it ignored (was a 500).
        (
            "alertmanager",
            {"version": "4", "alerts": [{"status": "firing", "fingerprint": "\ud800"}]},
            200,
            "alert \\ud800 (no alertname)",
        ),
        (
            "github",
            _with_deployment_id(payload("github_deployment_status_in_progress"), "\ud800\x1b"),
            200,
            "GitHub deployment \\ud800\\x1b status 'in_progress'",
        ),
    ],
)
async def test_unprintable_text_from_the_payload_is_escaped_in_the_answer(
    http: httpx.AsyncClient, stream: Any, source: str, body: Any, status: int, shown: str | None
) -> None:
    """A lone surrogate (valid JSON as an escape, encodable by no UTF-8 encoder) or a control
    character the payload holds is answered escaped, never a 500."""
    response = await deliver(http, source, body)
    assert response.status_code == status, response.text
    if shown is None:
        error = only_error(response)
        assert error["source"] == {"pointer": "/alerts/0/labels/\\ud800"}
        assert error["detail"] == "alerts[0].labels.\\ud800: must be a string"
    else:
        assert [item["what"] for item in response.json()["ignored"]] == [shown]
    assert stream() == []
