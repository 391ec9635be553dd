"""Alertmanager's webhook (version 4) -> incidents, field by field: the published examples
(tests/data/sources, Zulip's fixtures) and hand-made variants of them."""

from __future__ import annotations

from typing import Any

import pytest

from forwarder import IncidentEvent
from workers.ingest.sources.alertmanager import map_notification
from workers.ingest.sources.document import UnmappableError
from workers.ingest.sources.mapped import Mapped
from workers.ingest.sources.mapping_file import AlertmanagerMapping

from .payloads import load, utc_ns

DEFAULTS = AlertmanagerMapping()
STARTS_NS = utc_ns(2020, 2, 6, 0, 17, 58, micros=432_911)
"""The examples' ``startsAt`` 2020-02-06T00:17:58.432911368Z: Python keeps microseconds."""
ENDS = "2020-02-06T00:47:58Z"
ENDS_NS = utc_ns(2020, 2, 6, 0, 47, 58)


def alert(
    labels: dict[str, str] | None = None,
    *,
    status: str = "firing",
    fingerprint: str = "a1bc48475b20e73d",
    starts_at: str = "2020-02-06T00:17:58.432911368Z",
    ends_at: str = "0001-01-01T00:00:00Z",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One alert as Alertmanager sends it (by default the firing example's first)."""
    return {
        "status": status,
        "labels": {"alertname": "HighLatency", **(labels or {})},
        "annotations": annotations or {},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


def notification(*alerts: Any) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "forwarder", "alerts": list(alerts)}


def incidents(mapped: Mapped) -> list[dict[str, Any]]:
    assert all(isinstance(event, IncidentEvent) for event in mapped.events)
    return [event.attributes() for event in mapped.events]


def one(labels: dict[str, str], mapping: AlertmanagerMapping = DEFAULTS, **kw: Any) -> Any:
    """The attributes of the single incident one alert with ``labels`` maps to."""
    mapped = map_notification(notification(alert(labels, **kw)), mapping)
    assert (mapped.ignored, mapped.refused) == ([], [])
    [attributes] = incidents(mapped)
    return attributes


def test_published_firing_example_has_no_service_nor_team_so_both_alerts_are_ignored() -> None:
    """Zulip's alerts carry alertname, host and severity only: each is ignored, saying why."""
    mapped = map_notification(load("alertmanager_firing.json"), DEFAULTS)
    assert (mapped.events, mapped.refused) == ([], [])
    reason = (
        "it has none of the labels that name its services or team (service, services, job, team)"
    )
    assert [(item.what, item.reason) for item in mapped.ignored] == [
        ("alert a1bc48475b20e73d (High CPU Temperature)", reason),
        ("alert c2ea85182f28cbd9 (High CPU Temperature)", reason),
    ]


def test_published_firing_example_with_a_service_label_maps_every_field() -> None:
    """Given a service, an alert of the example is a start: every attribute is exact."""
    document = load("alertmanager_firing.json")
    for each in document["alerts"]:
        each["labels"].update(service="thermal", team="ops", env="prod")
    mapped = map_notification(document, DEFAULTS)
    assert incidents(mapped) == [
        {
            "id": f"alertmanager-{fingerprint}:{STARTS_NS}",
            "started_at": STARTS_NS,
            "services": ["thermal"],
            "team": "ops",
            "env": "prod",
            "severity": "critical",
            "name": "High CPU Temperature: High CPU core temperature",
        }
        for fingerprint in ("a1bc48475b20e73d", "c2ea85182f28cbd9")
    ]


def test_published_resolved_example_with_zero_ends_at_is_refused_with_a_clear_reason() -> None:
    """The example's resolved alert keeps endsAt at Go's zero time: no finish can be made."""
    document = load("alertmanager_resolved.json")
    document["alerts"][0]["labels"]["service"] = "thermal"
    mapped = map_notification(document, DEFAULTS)
    assert (mapped.events, mapped.ignored) == ([], [])
    [error] = mapped.refused
    assert error.pointer == "/alerts/0/endsAt"
    assert error.detail == (
        "alerts[0].endsAt: is the zero time 0001-01-01T00:00:00Z: "
        "a resolved alert needs the time it resolved"
    )


def test_resolved_is_start_and_finish_with_the_id_of_its_firing() -> None:
    """A resolution carries startsAt and endsAt; its id is its firing's, so they merge."""
    firing = one({"service": "api"})
    resolved = one({"service": "api"}, status="resolved", ends_at=ENDS)
    assert resolved == {**firing, "finished_at": ENDS_NS}
    assert "finished_at" not in firing


def test_firing_ignores_an_ends_at_in_the_future() -> None:
    """A firing alert's endsAt (zero, or a future time) is no finish."""
    assert "finished_at" not in one({"service": "api"}, ends_at="2999-01-01T00:00:00Z")


def test_the_id_is_stable_across_repeats_and_new_for_a_new_starts_at() -> None:
    """A re-sent notification gives the same id; the same alert firing later a new one."""
    first = one({"service": "api"})["id"]
    assert one({"service": "api"})["id"] == first
    later = one({"service": "api"}, starts_at="2020-02-07T00:00:00Z")["id"]
    assert later == f"alertmanager-a1bc48475b20e73d:{utc_ns(2020, 2, 7, 0, 0, 0)}"
    assert one({"service": "api"}, fingerprint="0000000000000001")["id"] != first


@pytest.mark.parametrize(
    ("labels", "services"),
    [
        ({"service": "api"}, ["api"]),
        ({"services": "api, web ,,db"}, ["api", "web", "db"]),
        ({"service": "api,web"}, ["api", "web"]),
        ({"job": "node-exporter"}, ["node-exporter"]),
        ({"service": "api", "services": "x,y", "job": "node"}, ["api"]),
        ({"service": "  ", "job": "node"}, ["node"]),
    ],
)
def test_services_come_from_the_first_label_present(labels: dict[str, str], services: Any) -> None:
    """service, then services, then job; commas split; blank values do not count."""
    assert one(labels)["services"] == services


@pytest.mark.parametrize(
    ("labels", "env"),
    [
        ({"env": "prod"}, "prod"),
        ({"environment": "staging"}, "staging"),
        ({"env": "a", "environment": "b"}, "a"),
    ],
)
def test_env_comes_from_env_or_environment(labels: dict[str, str], env: str) -> None:
    """env first, environment second."""
    assert one({"team": "ops", **labels})["env"] == env


def test_team_alone_is_enough_and_nothing_else_is_invented() -> None:
    """A team without services is an incident; absent labels give absent fields."""
    attributes = one({"team": "ops"})
    assert attributes == {
        "id": f"alertmanager-a1bc48475b20e73d:{STARTS_NS}",
        "started_at": STARTS_NS,
        "team": "ops",
        "name": "HighLatency",
    }


@pytest.mark.parametrize(
    ("alertname", "summary", "name"),
    [
        ("HighLatency", "p99 above 1s", "HighLatency: p99 above 1s"),
        ("HighLatency", None, "HighLatency"),
        ("", "p99 above 1s", "p99 above 1s"),
        ("", None, None),
    ],
)
def test_name_is_alertname_and_summary(alertname: str, summary: str | None, name: Any) -> None:
    """alertname and the summary annotation, joined by a colon when both are there."""
    annotations = {"summary": summary} if summary else {}
    attributes = one({"alertname": alertname, "team": "ops"}, annotations=annotations)
    assert attributes.get("name") == name


def test_overridden_label_names_and_static_and_label_tags() -> None:
    """The mapping file's label lists replace the defaults; tags: static first, then labels."""
    mapping = AlertmanagerMapping(
        services_labels=["app"],
        team_labels=["owner"],
        env_labels=["stage"],
        severity_labels=["priority"],
        name_label="title",
        name_annotation="headline",
        tag_labels=["cluster", "region", "absent"],
        tags=["source:alertmanager"],
    )
    labels = {"app": "api", "owner": "ops", "stage": "prod", "priority": "P1", "title": "Down"}
    labels |= {"cluster": "eu-1", "region": "west", "service": "ignored", "team": "ignored"}
    attributes = one(labels, mapping, annotations={"headline": "api is down", "summary": "x"})
    assert attributes == {
        "id": f"alertmanager-a1bc48475b20e73d:{STARTS_NS}",
        "started_at": STARTS_NS,
        "services": ["api"],
        "team": "ops",
        "env": "prod",
        "severity": "P1",
        "name": "Down: api is down",
        "custom_tags": ["source:alertmanager", "cluster:eu-1", "region:west"],
    }


@pytest.mark.parametrize(
    ("matcher", "labels", "kept"),
    [
        ('severity="critical"', {"severity": "critical"}, True),
        ('severity="critical"', {"severity": "warning"}, False),
        ('severity!="info"', {"severity": "critical"}, True),
        ('severity!="info"', {"severity": "info"}, False),
        ('severity=~"critical|page"', {"severity": "page"}, True),
        ('severity=~"crit"', {"severity": "critical"}, False),  # anchored, as Prometheus does
        ('severity!~"info|debug"', {"severity": "critical"}, True),
        ('severity!~"info|debug"', {"severity": "debug"}, False),
        ('severity=""', {}, True),  # a missing label has the empty value
        ('severity!=""', {}, False),
        ('severity=~".*"', {}, True),
    ],
)
def test_matchers_choose_which_alerts_are_incidents(
    matcher: str, labels: dict[str, str], kept: bool
) -> None:
    """=, !=, =~, !~ on labels; an alert that does not match is ignored, saying why."""
    mapping = AlertmanagerMapping(matchers=[matcher])
    mapped = map_notification(notification(alert({"service": "api", **labels})), mapping)
    assert len(mapped.events) == int(kept)
    assert mapped.refused == []
    if not kept:
        [ignored] = mapped.ignored
        assert ignored.what == "alert a1bc48475b20e73d (HighLatency)"
        assert "does not match the matchers of [alertmanager]" in ignored.reason


def test_every_matcher_must_match() -> None:
    """Several matchers are ANDed."""
    mapping = AlertmanagerMapping(matchers=['severity="critical"', 'env=~"prod.*"'])
    both = alert({"service": "a", "severity": "critical", "env": "prod-eu"}, fingerprint="1" * 16)
    one_only = alert({"service": "b", "severity": "critical", "env": "dev"}, fingerprint="2" * 16)
    mapped = map_notification(notification(both, one_only), mapping)
    assert [event.attributes()["services"] for event in mapped.events] == [["a"]]
    assert [item.what for item in mapped.ignored] == [f"alert {'2' * 16} (HighLatency)"]


def test_one_bad_alert_among_good_ones_is_refused_alone() -> None:
    """The good alerts are mapped; the bad one is refused with its pointer and reason."""
    good = alert({"service": "api"}, fingerprint="1" * 16)
    bad = alert({"service": "web"}, fingerprint="2" * 16, starts_at="yesterday")
    also_good = alert({"team": "ops"}, fingerprint="3" * 16)
    mapped = map_notification(notification(good, bad, also_good), DEFAULTS)
    assert [event.event_id for event in mapped.events] == [
        f"alertmanager-{'1' * 16}:{STARTS_NS}",
        f"alertmanager-{'3' * 16}:{STARTS_NS}",
    ]
    [error] = mapped.refused
    assert error.pointer == "/alerts/1/startsAt"
    assert error.detail.startswith("alerts[1].startsAt: is not an ISO-8601 instant")


def edited(change: dict[str, Any]) -> dict[str, Any]:
    return {**alert({"service": "api"}), **change}


@pytest.mark.parametrize(
    ("change", "pointer", "reason"),
    [
        (
            {"status": "pending"},
            "/alerts/0/status",
            "status 'pending' is neither firing nor resolved",
        ),
        ({"fingerprint": None}, "/alerts/0/fingerprint", "is required"),
        ({"fingerprint": 7}, "/alerts/0/fingerprint", "must be a string"),
        ({"startsAt": None}, "/alerts/0/startsAt", "is required"),
        ({"labels": {"service": 1}}, "/alerts/0/labels/service", "must be a string"),
        ({"labels": ["service"]}, "/alerts/0/labels", "must be a JSON object"),
        ({"status": "resolved", "endsAt": None}, "/alerts/0/endsAt", "is required"),
        (
            {"status": "resolved", "endsAt": "2020-02-06T00:00:00Z"},
            "/alerts/0/endsAt",
            "becomes finished_at: is before started_at",
        ),
        (
            {"labels": {"service": "x" * 1_001}},
            "/alerts/0/labels/service",
            "becomes services[0]: String should have at most 1000 characters",
        ),
        # A name past the limit is cut, not refused: tests/ingest/sources/test_review.py.
    ],
)
def test_an_alert_that_cannot_be_mapped_names_its_member(
    change: dict[str, Any], pointer: str, reason: str
) -> None:
    """Each refusal points at the alert's member and says why."""
    mapped = map_notification(notification(edited(change)), DEFAULTS)
    [error] = mapped.refused
    assert error.pointer == pointer
    assert error.detail.endswith(reason)
    assert mapped.events == []


def test_an_alert_that_is_not_an_object_is_refused() -> None:
    """An element of alerts that is not an object is refused by its index."""
    mapped = map_notification(notification(alert({"service": "api"}), "junk"), DEFAULTS)
    assert len(mapped.events) == 1
    assert [(e.pointer, e.detail) for e in mapped.refused] == [
        ("/alerts/1", "alerts[1]: must be a JSON object")
    ]


@pytest.mark.parametrize(
    ("document", "pointer", "detail"),
    [
        ({"version": "3", "alerts": []}, "/version", 'version: must be "4"'),
        ({"version": 4, "alerts": []}, "/version", 'version: must be "4"'),
        ({"alerts": []}, "/version", 'version: must be "4"'),
        ({"version": "4"}, "/alerts", "alerts: is required"),
        ({"version": "4", "alerts": {}}, "/alerts", "alerts: must be a JSON array"),
        ([], "", "the body: must be a JSON object"),
    ],
)
def test_a_notification_that_is_not_version_4_is_unmappable(
    document: Any, pointer: str, detail: str
) -> None:
    """The whole body is refused (a 400) when it is not a version 4 notification."""
    with pytest.raises(UnmappableError) as caught:
        map_notification(document, DEFAULTS)
    assert caught.value.error.pointer == pointer
    assert caught.value.error.detail.startswith(detail)


def test_a_fingerprint_datadog_would_refuse_as_an_id_is_hashed_stably() -> None:
    """An id with characters Datadog refuses becomes the source and a hash, the same each time."""
    first = one({"service": "api"}, fingerprint="not a hex/fingerprint")["id"]
    assert first == one({"service": "api"}, fingerprint="not a hex/fingerprint")["id"]
    assert first.startswith("alertmanager-")
    assert len(first) == len("alertmanager-") + 40


def test_a_tag_label_datadog_would_refuse_is_left_out_not_the_incident() -> None:
    """A label value past Datadog's 200 characters for a tag, or with a newline, makes no
    tag; the incident keeps its other tags and is sent."""
    mapping = AlertmanagerMapping(tag_labels=["zone", "region", "rack"])
    labels = {"service": "api", "zone": "eu-1", "region": "r" * 300, "rack": "a\nb"}
    mapped = map_notification(notification(alert(labels)), mapping)
    assert mapped.refused == []
    [event] = mapped.events
    assert isinstance(event, IncidentEvent)
    assert event.custom_tags == ["zone:eu-1"]
