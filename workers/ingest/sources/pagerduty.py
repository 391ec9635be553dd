"""PagerDuty's webhooks (v3) -> incidents. Pure.

``incident.triggered`` is an incident's start (the incident's ``created_at``, else the
event's ``occurred_at``);
``incident.resolved`` its finish (the event's ``occurred_at``), sent with the start too, so
that a resolution whose trigger was never received still makes a whole incident. The id
comes from PagerDuty's incident id: every delivery of the same incident folds into one
state. Every other event type is answered 2xx and ignored.
"""

from __future__ import annotations

from typing import Any, Final

from forwarder.protocol import KIND_FAILURE
from workers.ingest.sources.document import Node, name_within_limit, shown, validated
from workers.ingest.sources.ids import source_id
from workers.ingest.sources.mapped import Ignored, Mapped
from workers.ingest.sources.mapping_file import PagerDutyMapping

SOURCE: Final = "pagerduty"
TRIGGERED: Final = "incident.triggered"
RESOLVED: Final = "incident.resolved"


def _severity(incident: Node, mapping: PagerDutyMapping) -> tuple[str, str] | None:
    """The first of priority (its name, e.g. ``P1``) and urgency the incident has."""
    for source in mapping.severity_from:
        if source == "priority":
            priority = incident.get("priority")
            if priority is not None and (name := priority.optional_text("summary")):
                return name, f"{priority.pointer}/summary"
        elif urgency := incident.optional_text("urgency"):
            return urgency, f"{incident.pointer}/urgency"
    return None


def _first_team(incident: Node) -> tuple[str, str] | None:
    teams = incident.get("teams")
    for team in teams.items() if teams is not None else ():
        if name := team.optional_text("summary"):
            return name, f"{team.pointer}/summary"
    return None


def map_webhook(document: Any, mapping: PagerDutyMapping) -> Mapped:
    """The incident one webhook delivers (or why it is ignored); ``UnmappableError`` when
    the payload is not a PagerDuty v3 webhook this can read."""
    event = Node(document).object().member("event").object()
    event_type = event.text("event_type")
    mapped = Mapped()
    if event_type not in {TRIGGERED, RESOLVED}:
        what = f"PagerDuty event {shown(event_type)}"
        reason = f"only {TRIGGERED} (an incident's start) and {RESOLVED} (its finish) are events"
        mapped.ignored.append(Ignored(what, reason))
        return mapped
    incident = event.member("data").object()
    incident_id = incident.text("id")
    attributes: dict[str, Any] = {"id": source_id(SOURCE, incident_id)}
    origin = {"id": f"{incident.pointer}/id"}
    # A trigger is the incident's creation: its time stands in when created_at is left out
    # (PagerDuty's recorded deliveries lack it). A resolution without it is a finish alone.
    start = "created_at" if incident.get("created_at") is not None else None
    start_of = incident if start else event
    if event_type == TRIGGERED:
        start = start or "occurred_at"
    if start is not None:
        attributes["started_at"] = start_of.instant(start)
        origin["started_at"] = f"{start_of.pointer}/{start}"
        service = incident.member("service").object()
        attributes["services"] = [service.text("summary")]
        origin["services"] = f"{service.pointer}/summary"
    if event_type == RESOLVED:
        attributes["finished_at"] = event.instant("occurred_at")
        origin["finished_at"] = f"{event.pointer}/occurred_at"
    title = incident.optional_text("title")
    found = {
        "name": (title and name_within_limit(title), f"{incident.pointer}/title"),
        "severity": _severity(incident, mapping),
        "team": _first_team(incident) if mapping.team_from_teams else None,
        "env": (mapping.env, "[pagerduty].env"),
    }
    if "started_at" in attributes:  # a finish alone names its incident by id and nothing else
        for field, pair in found.items():
            if pair is not None and pair[0] is not None:
                attributes[field], origin[field] = pair
        if mapping.tags:
            attributes["custom_tags"] = list(mapping.tags)
    mapped.events.append(validated(attributes, KIND_FAILURE, origin))
    return mapped
