"""The published webhook examples in tests/data/sources/ hold the fields the source mapping reads.

These files are the test data for POST /sources/{alertmanager,pagerduty,github,gitlab}
(issue 13); SOURCES.md says where each came from. If a file is replaced or re-fetched, this
fails before a mapping test does, and says which field went missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SOURCES = Path(__file__).parent / "sources"


def load(name: str) -> Any:
    return json.loads((SOURCES / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("name", "status"),
    [("alertmanager_firing.json", "firing"), ("alertmanager_resolved.json", "resolved")],
)
def test_alertmanager_notification(name: str, status: str) -> None:
    body = load(name)
    assert body["version"] == "4"
    assert body["status"] == status
    assert isinstance(body["groupKey"], str)
    assert body["alerts"]
    for alert in body["alerts"]:
        assert alert["status"] == status
        assert alert["fingerprint"]
        assert alert["startsAt"]
        assert "endsAt" in alert
        assert isinstance(alert["labels"], dict)


@pytest.mark.parametrize(
    ("name", "event_type", "incident_status"),
    [
        ("pagerduty_incident_triggered.json", "incident.triggered", "triggered"),
        ("pagerduty_incident_acknowledged.json", "incident.acknowledged", "acknowledged"),
        ("pagerduty_incident_resolved.json", "incident.resolved", "resolved"),
        ("pagerduty_incident_priority_updated.json", "incident.priority_updated", "triggered"),
    ],
)
def test_pagerduty_event(name: str, event_type: str, incident_status: str) -> None:
    event = load(name)["event"]
    assert event["event_type"] == event_type
    assert event["resource_type"] == "incident"
    assert event["id"]
    assert event["occurred_at"]
    assert event["data"]["type"] == "incident"
    assert event["data"]["id"]
    assert event["data"]["status"] == incident_status
    assert event["data"]["service"]["id"]


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("github_deployment_status_success.json", "success"),
        ("github_deployment_status_in_progress.json", "in_progress"),
    ],
)
def test_github_deployment_status(name: str, state: str) -> None:
    body = load(name)
    assert body["action"] == "created"
    assert isinstance(body["deployment"]["id"], int)
    assert len(body["deployment"]["sha"]) == 40
    assert body["deployment"]["environment"]
    assert body["deployment_status"]["state"] == state
    assert body["deployment_status"]["created_at"]
    assert body["repository"]["full_name"]


def test_github_ping() -> None:
    body = load("github_ping.json")
    assert body["zen"]
    assert isinstance(body["hook_id"], int)
    assert body["hook_id"] == body["hook"]["id"]


@pytest.mark.parametrize(
    ("name", "status"),
    [("gitlab_deployment_running.json", "running"), ("gitlab_deployment_success.json", "success")],
)
def test_gitlab_deployment(name: str, status: str) -> None:
    body = load(name)
    assert body["object_kind"] == "deployment"
    assert body["status"] == status
    assert isinstance(body["deployment_id"], int)
    assert body["status_changed_at"]
    assert body["environment"]
    assert body["project"]["name"]
    full_sha = body["commit_url"].rsplit("/", 1)[-1]
    assert len(full_sha) == 40
    assert full_sha.startswith(body["short_sha"])
