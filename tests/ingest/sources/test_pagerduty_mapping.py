"""PagerDuty's webhooks (v3) -> incidents, field by field: the published examples (Zulip's
recorded deliveries, PagerDuty's documented one) and hand-made variants of them."""

from __future__ import annotations

from typing import Any

import pytest

from forwarder import IncidentEvent
from workers.ingest.sources.document import UnmappableError
from workers.ingest.sources.mapping_file import PagerDutyMapping
from workers.ingest.sources.pagerduty import map_webhook

from .payloads import load, utc_ns

DEFAULTS = PagerDutyMapping()
TRIGGERED_AT_NS = utc_ns(2021, 6, 4, 13, 35, 29, micros=781_000)
RESOLVED_AT_NS = utc_ns(2021, 6, 4, 13, 16, 53, micros=816_000)
DOCS_CREATED_NS = utc_ns(2020, 4, 9, 15, 16, 27)
DOCS_OCCURRED_NS = utc_ns(2020, 10, 2, 18, 45, 22, micros=169_000)


def docs_example(event_type: str) -> Any:
    """PagerDuty's documented incident (priority P1, team, created_at) as ``event_type``."""
    document = load("pagerduty_incident_priority_updated.json")
    document["event"]["event_type"] = event_type
    return document


def mapped_one(document: Any, mapping: PagerDutyMapping = DEFAULTS) -> dict[str, Any]:
    mapped = map_webhook(document, mapping)
    assert (mapped.ignored, mapped.refused) == ([], [])
    [event] = mapped.events
    assert isinstance(event, IncidentEvent)
    return event.attributes()


def test_published_trigger_without_created_at_starts_at_the_events_time() -> None:
    """Zulip's trigger has no data.created_at: the start is event.occurred_at."""
    assert mapped_one(load("pagerduty_incident_triggered.json")) == {
        "id": "pagerduty-PFQZPSY",
        "started_at": TRIGGERED_AT_NS,
        "services": ["pig208"],
        "name": "Test Incident 3",
        "severity": "high",  # no priority: the urgency
    }


def test_published_resolution_without_created_at_is_a_finish_by_id() -> None:
    """Without created_at a resolution names its incident and when it finished, nothing else."""
    mapped = map_webhook(load("pagerduty_incident_resolved.json"), DEFAULTS)
    [event] = mapped.events
    assert isinstance(event, IncidentEvent)
    assert event.is_finish_only
    assert event.attributes() == {"id": "pagerduty-PCPZE64", "finished_at": RESOLVED_AT_NS}


def test_documented_incident_triggered_maps_every_field() -> None:
    """created_at is the start; P1 (priority before urgency) the severity; the first team."""
    assert mapped_one(docs_example("incident.triggered")) == {
        "id": "pagerduty-PGR0VU2",
        "started_at": DOCS_CREATED_NS,
        "services": ["API Service"],
        "team": "Engineering",
        "name": "A little bump in the road",
        "severity": "P1",
    }


def test_documented_incident_resolved_is_start_and_finish() -> None:
    """With created_at a resolution makes the whole incident: a lost trigger costs nothing."""
    assert mapped_one(docs_example("incident.resolved")) == {
        "id": "pagerduty-PGR0VU2",
        "started_at": DOCS_CREATED_NS,
        "finished_at": DOCS_OCCURRED_NS,
        "services": ["API Service"],
        "team": "Engineering",
        "name": "A little bump in the road",
        "severity": "P1",
    }


def test_trigger_and_resolution_of_one_incident_share_its_id() -> None:
    """Every delivery about an incident folds into one state by PagerDuty's incident id."""
    ids = {
        mapped_one(docs_example(kind))["id"] for kind in ("incident.triggered", "incident.resolved")
    }
    assert ids == {"pagerduty-PGR0VU2"}


@pytest.mark.parametrize(
    "name",
    ["pagerduty_incident_acknowledged.json", "pagerduty_incident_priority_updated.json"],
)
def test_published_other_event_types_are_ignored(name: str) -> None:
    """acknowledged and priority_updated are neither start nor finish: ignored, saying so."""
    document = load(name)
    mapped = map_webhook(document, DEFAULTS)
    assert (mapped.events, mapped.refused) == ([], [])
    [ignored] = mapped.ignored
    assert ignored.what == f"PagerDuty event {document['event']['event_type']!r}"
    assert "incident.triggered" in ignored.reason
    assert "incident.resolved" in ignored.reason


def test_an_ignored_event_type_needs_no_incident_data() -> None:
    """A service.updated (no incident in data) is ignored, not refused."""
    mapped = map_webhook({"event": {"event_type": "service.updated", "data": None}}, DEFAULTS)
    assert [item.what for item in mapped.ignored] == ["PagerDuty event 'service.updated'"]


@pytest.mark.parametrize(
    ("severity_from", "severity"),
    [
        (["priority", "urgency"], "P1"),
        (["urgency", "priority"], "high"),
        (["urgency"], "high"),
        (["priority"], "P1"),
        ([], None),
    ],
)
def test_severity_is_the_first_of_severity_from_the_incident_has(
    severity_from: Any, severity: str | None
) -> None:
    """The mapping's order decides between priority's name and urgency."""
    mapping = PagerDutyMapping(severity_from=severity_from)
    assert mapped_one(docs_example("incident.triggered"), mapping).get("severity") == severity


def test_severity_falls_through_to_urgency_without_priority() -> None:
    """priority null (or no summary) is skipped; urgency absent as well gives no severity."""
    document = docs_example("incident.triggered")
    document["event"]["data"]["priority"] = {"id": "PSO75BM"}
    assert mapped_one(document)["severity"] == "high"
    del document["event"]["data"]["urgency"]
    assert "severity" not in mapped_one(document)


def test_team_is_the_first_named_team_unless_turned_off() -> None:
    """teams[].summary, skipping a team without one; team_from_teams false: no team."""
    document = docs_example("incident.triggered")
    document["event"]["data"]["teams"] = [{"id": "T0"}, {"summary": "SRE"}, {"summary": "DB"}]
    assert mapped_one(document)["team"] == "SRE"
    assert "team" not in mapped_one(document, PagerDutyMapping(team_from_teams=False))


def test_static_env_and_tags_go_on_every_start_but_not_on_a_finish_alone() -> None:
    """[pagerduty] env and tags decorate an incident with a start; a finish by id stays bare."""
    mapping = PagerDutyMapping(env="prod", tags=["source:pagerduty"])
    started = mapped_one(docs_example("incident.triggered"), mapping)
    assert (started["env"], started["custom_tags"]) == ("prod", ["source:pagerduty"])
    finish = mapped_one(load("pagerduty_incident_resolved.json"), mapping)
    assert finish == {"id": "pagerduty-PCPZE64", "finished_at": RESOLVED_AT_NS}


def test_a_short_incident_id_is_hashed_to_an_id_datadog_takes() -> None:
    """pagerduty-P1 is too short for Datadog: the source and a hash, the same each time."""
    document = docs_example("incident.triggered")
    document["event"]["data"]["id"] = "P1"
    first = mapped_one(document)["id"]
    assert first == mapped_one(document)["id"]
    assert first.startswith("pagerduty-")
    assert len(first) == len("pagerduty-") + 40


def broken(path: tuple[str, ...], value: Any, event_type: str = "incident.triggered") -> Any:
    document = docs_example(event_type)
    where = document["event"]
    for name in path[:-1]:
        where = where[name]
    if value is ...:
        del where[path[-1]]
    else:
        where[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("document", "pointer", "reason"),
    [
        ({}, "/event", "is required"),
        ({"event": []}, "/event", "must be a JSON object"),
        (broken(("event_type",), 3), "/event/event_type", "must be a string"),
        (broken(("data",), ...), "/event/data", "is required"),
        (broken(("data", "id"), ""), "/event/data/id", "must not be empty"),
        (broken(("data", "service"), ...), "/event/data/service", "is required"),
        (
            broken(("data", "service", "summary"), 5),
            "/event/data/service/summary",
            "must be a string",
        ),
        (broken(("data", "created_at"), "soon"), "/event/data/created_at", "is not an ISO-8601"),
        (broken(("data", "title"), 9), "/event/data/title", "must be a string"),
        (broken(("data", "teams"), {}), "/event/data/teams", "must be a JSON array"),
        (
            broken(("occurred_at",), "2000-01-01T00:00:00Z", "incident.resolved"),
            "/event/occurred_at",
            "becomes finished_at: is before started_at",
        ),
    ],
)
def test_a_webhook_that_cannot_be_mapped_names_its_member(
    document: Any, pointer: str, reason: str
) -> None:
    """Each unmappable webhook is a 400 pointing at the member and saying why."""
    with pytest.raises(UnmappableError) as caught:
        map_webhook(document, DEFAULTS)
    assert caught.value.error.pointer == pointer
    assert reason in caught.value.error.detail


def test_a_trigger_without_any_time_is_unmappable() -> None:
    """No created_at and no occurred_at: the start is required at event.occurred_at."""
    document = broken(("data", "created_at"), ...)
    del document["event"]["occurred_at"]
    with pytest.raises(UnmappableError) as caught:
        map_webhook(document, DEFAULTS)
    assert caught.value.error.pointer == "/event/occurred_at"
