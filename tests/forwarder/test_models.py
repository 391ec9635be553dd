"""Datadog's rules for incident events, checked before anything is enqueued."""

from __future__ import annotations

from typing import Any

import pytest

from forwarder import FieldError, IncidentEvent, InvalidEventError, derive_incident_id, to_event

SHA = "66adc9350f2cc9b250b69abddab733dd55e1a588"
START = {"started_at": 1_700_000_000, "services": ["checkout"]}


def errors_of(data: Any) -> list[FieldError]:
    with pytest.raises(InvalidEventError) as caught:
        to_event(data)
    return list(caught.value.errors)


@pytest.mark.parametrize(
    "data",
    [
        START,
        {"started_at": 1_700_000_000, "team": "payments"},
        {**START, "id": "a" * 16},
        {**START, "id": "A.b_c:d-0123456789" + "x" * 110},
        {**START, "finished_at": 1_700_000_000},
        {"id": "incident-0000000001", "finished_at": 1_700_000_100},
        {**START, "git": {"repository_url": "https://github.com/o/r", "commit_sha": SHA}},
        {**START, "git": {"repository_url": "r", "commit_sha": SHA.upper() + "ab"}},
        {**START, "custom_tags": [f"k{i}:v" for i in range(100)]},
        {**START, "custom_tags": None},
        {**START, "name": "db down", "severity": "SEV-1", "env": "prod", "version": "1.2"},
        {"data": {"attributes": START}},
    ],
)
def test_valid_events(data: dict[str, Any]) -> None:
    """Events within every rule are accepted."""
    assert isinstance(to_event(data), IncidentEvent)


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"services": ["a"]}, "started_at", "required, except in a finish"),
        ({"id": "incident-0000000001"}, "started_at", "id + finished_at"),
        ({"finished_at": 1_700_000_000}, "started_at", "names its incident by id"),
        ({"started_at": 1_700_000_000}, "services", "either services or team"),
        ({**START, "services": []}, "services", "at least 1 item"),
        ({**START, "services": [""]}, "services[0]", "at least 1 character"),
        ({**START, "team": ""}, "team", "at least 1 character"),
        ({**START, "finished_at": 1_600_000_000}, "finished_at", "before started_at"),
        ({**START, "id": "short"}, "id", "16-128 characters"),
        ({**START, "id": "x" * 129}, "id", "16-128 characters"),
        ({**START, "id": "has spaces in it!!"}, "id", "A-Z, a-z, 0-9"),
        ({**START, "id": 12345678901234567}, "id", "valid string"),
        ({**START, "git": {"repository_url": "r"}}, "git.commit_sha", "required"),
        ({**START, "git": {"commit_sha": SHA}}, "git.repository_url", "required"),
        (
            {**START, "git": {"repository_url": "r", "commit_sha": "abc123"}},
            "git.commit_sha",
            "full commit SHA",
        ),
        (
            {**START, "git": {"repository_url": "r", "commit_sha": "g" * 40}},
            "git.commit_sha",
            "full commit SHA",
        ),
        ({**START, "custom_tags": ["novalue"]}, "custom_tags[0]", "key:value"),
        ({**START, "custom_tags": [":v"]}, "custom_tags[0]", "key:value"),
        ({**START, "custom_tags": [f"k{i}:v" for i in range(101)]}, "custom_tags", "at most 100"),
        ({**START, "colour": "red"}, "colour", "not a field Datadog accepts"),
        ({**START, "started_at": "soon"}, "started_at", "ISO-8601"),
        ({**START, "finished_at": 1_700_000_000_000_000}, "finished_at", "microseconds"),
        ({"data": {"attributes": {"services": ["a"]}}}, "started_at", "required"),
        ({"data": {"attributes": "x"}}, "-", "data.attributes must be a JSON object"),
        ([1, 2], "-", "must be a JSON object"),
    ],
)
def test_invalid_events_name_field_and_reason(data: Any, field: str, reason: str) -> None:
    """Each broken rule is reported under the field to fix, with the reason."""
    errors = errors_of(data)
    assert any(e.field == field and reason in e.reason for e in errors), errors


def test_every_bad_field_is_reported_at_once() -> None:
    """A user fixing an event sees all its problems, not one per attempt."""
    errors = errors_of({"id": "short", "started_at": "x", "services": ["a"], "colour": 1})
    assert {e.field for e in errors} == {"id", "started_at", "colour"}


def test_message_reads_field_colon_reason() -> None:
    """The exception's text names the field first."""
    with pytest.raises(InvalidEventError, match=r"^finished_at: is before started_at$"):
        to_event({**START, "finished_at": 1})
    with pytest.raises(InvalidEventError, match=r"^services: either services or team"):
        to_event({"started_at": 1_700_000_000})


def test_attributes_are_nanoseconds_with_an_id() -> None:
    """What is enqueued carries integer nanoseconds and always an id."""
    event = to_event({"started_at": "2023-11-14T22:13:20Z", "services": ["a"], "env": "prod"})
    attributes = event.attributes()
    assert attributes["started_at"] == 1_700_000_000_000_000_000
    assert attributes["id"] == event.incident_id
    assert attributes["id"].startswith("dora-")


def test_derived_id_follows_datadogs_matching_rule() -> None:
    """Same env + services + started_at (in any unit or order) give the same id."""
    a = to_event({"started_at": 1_700_000_000, "services": ["b", "a"], "env": "prod"})
    b = to_event(
        {
            "started_at": 1_700_000_000_000,
            "services": ["a", "b"],
            "env": "prod",
            "severity": "SEV-2",
        }
    )
    c = to_event({"started_at": 1_700_000_000, "services": ["a", "b"], "env": "staging"})
    assert a.incident_id == b.incident_id != c.incident_id
    assert a.incident_id == derive_incident_id(
        started_at_ns=1_700_000_000_000_000_000, env="prod", services=["a", "b"], team=None
    )


def test_given_id_is_kept() -> None:
    """A producer's id is used as is."""
    assert to_event({**START, "id": "my-incident-000001"}).incident_id == "my-incident-000001"


def test_finish_only_is_marked() -> None:
    """A finish naming only the id is recognised as needing its stored start."""
    event = to_event({"id": "incident-0000000001", "finished_at": 1_700_000_100})
    assert event.is_finish_only
    assert not to_event(START).is_finish_only


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", "incident-0000000001\n"), ("custom_tags", ["env:prod\n"])],
)
def test_a_trailing_newline_is_refused(field: str, value: object) -> None:
    """An id or tag ending in a newline is refused by name (``$`` alone would let it pass)."""
    with pytest.raises(InvalidEventError) as caught:
        to_event({**START, field: value})
    assert caught.value.errors[0].field.startswith(field)
