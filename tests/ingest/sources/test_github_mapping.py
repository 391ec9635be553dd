"""GitHub's deployment_status webhook -> deployments, field by field: octokit's published
examples (tests/data/sources) and hand-made variants of them."""

from __future__ import annotations

from typing import Any

import pytest

from forwarder import DeploymentEvent
from workers.ingest.sources.document import UnmappableError
from workers.ingest.sources.github import map_event
from workers.ingest.sources.mapping_file import GitHubMapping

from .payloads import load, utc_ns

DEFAULTS = GitHubMapping()
SUCCESS = "github_deployment_status_success.json"
EXPECTED = {
    "id": "github-deployment:github.com:145988746",
    "service": "Hello-World",
    "started_at": utc_ns(2019, 5, 15, 15, 20, 53),
    "finished_at": utc_ns(2019, 5, 15, 15, 20, 55),
    "env": "production",
    "version": "master",
    "git": {
        "repository_url": "https://github.com/Codertocat/Hello-World",
        "commit_sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
    },
}
"""The published success example, mapped: every attribute."""


def deployed(document: Any, mapping: GitHubMapping = DEFAULTS) -> dict[str, Any]:
    mapped = map_event("deployment_status", document, mapping)
    assert (mapped.ignored, mapped.refused) == ([], [])
    [event] = mapped.events
    assert isinstance(event, DeploymentEvent)
    return event.attributes()


def success_with(**deployment: Any) -> Any:
    document = load(SUCCESS)
    document["deployment"].update(deployment)
    return document


def test_published_success_maps_every_field() -> None:
    """created_at -> started_at, the status' created_at -> finished_at, repository and sha."""
    assert deployed(load(SUCCESS)) == EXPECTED


def test_a_redelivery_gives_the_same_id() -> None:
    """The id is GitHub's deployment id: a re-sent delivery folds into the same deployment."""
    assert deployed(load(SUCCESS))["id"] == deployed(load(SUCCESS))["id"]


@pytest.mark.parametrize(
    "payload",
    [
        {"service": "checkout"},
        '{"service": "checkout", "other": 1}',  # deployments made through REST keep a string
    ],
)
def test_the_deployments_payload_names_the_service(payload: Any) -> None:
    """payload.service (an object, or JSON text of one) overrides the repository's name."""
    assert deployed(success_with(payload=payload)) == {**EXPECTED, "service": "checkout"}


@pytest.mark.parametrize(
    "payload", [{}, "", "not json", "[1, 2]", '{"service": ""}', {"service": ""}, None, 3]
)
def test_a_payload_without_a_service_keeps_the_repository_name(payload: Any) -> None:
    """Empty, unparsable, non-object or service-less payloads fall back to repository.name."""
    assert deployed(success_with(payload=payload))["service"] == "Hello-World"


def test_the_payload_field_is_configurable() -> None:
    """[github] service_payload_field chooses the payload's member; tags are added."""
    mapping = GitHubMapping(service_payload_field="app", tags=["source:github"])
    document = success_with(payload={"service": "ignored", "app": "billing"})
    assert deployed(document, mapping) == {
        **EXPECTED,
        "service": "billing",
        "custom_tags": ["source:github"],
    }


def test_a_payload_service_that_is_not_text_is_refused() -> None:
    """payload.service of another type is a 400 naming it."""
    with pytest.raises(UnmappableError) as caught:
        map_event("deployment_status", success_with(payload={"service": 5}), DEFAULTS)
    assert caught.value.error.pointer == "/deployment/payload/service"
    assert caught.value.error.detail == "deployment.payload.service: must be a string"


def test_optional_environment_and_ref_are_left_out_when_absent() -> None:
    """No environment, an empty ref: no env, no version; the rest as published."""
    document = success_with(environment=None, ref="")
    expected = {key: value for key, value in EXPECTED.items() if key not in {"env", "version"}}
    assert deployed(document) == expected


@pytest.mark.parametrize("deployment_id", [145988746, "145988746"])
def test_integer_and_string_deployment_ids_give_the_same_id(deployment_id: Any) -> None:
    """GitHub's ids are integers; a string of the same digits is the same deployment."""
    assert (
        deployed(success_with(id=deployment_id))["id"] == "github-deployment:github.com:145988746"
    )


def test_published_in_progress_status_is_ignored() -> None:
    """Only success is a finished deployment: in_progress is answered 2xx and named."""
    mapped = map_event(
        "deployment_status", load("github_deployment_status_in_progress.json"), DEFAULTS
    )
    assert (mapped.events, mapped.refused) == ([], [])
    [ignored] = mapped.ignored
    assert ignored.what == "GitHub deployment 145988746 status 'in_progress'"
    assert ignored.reason == "only a status success is a finished deployment"


@pytest.mark.parametrize("state", ["pending", "queued", "waiting", "failure", "error", "inactive"])
def test_every_other_state_is_ignored(state: str) -> None:
    """The states GitHub documents besides success are ignored with the state named."""
    document = load(SUCCESS)
    document["deployment_status"]["state"] = state
    mapped = map_event("deployment_status", document, DEFAULTS)
    assert mapped.events == []
    assert [item.what for item in mapped.ignored] == [
        f"GitHub deployment 145988746 status {state!r}"
    ]


def test_published_ping_is_answered_as_ignored() -> None:
    """GitHub's ping says the webhook works; it is ignored with that reason, body unread."""
    mapped = map_event("ping", load("github_ping.json"), DEFAULTS)
    assert (mapped.events, mapped.refused) == ([], [])
    [ignored] = mapped.ignored
    assert ignored.what == "ping"
    assert "the webhook reaches the forwarder" in ignored.reason


@pytest.mark.parametrize("event_name", ["push", "deployment", "", "x" * 200])
def test_other_events_are_ignored_saying_to_select_deployment_status(event_name: str) -> None:
    """Any other X-GitHub-Event is ignored (the body is not read), its name quoted short."""
    mapped = map_event(event_name, "not even an object", DEFAULTS)
    [ignored] = mapped.ignored
    assert ignored.what.startswith("GitHub event '")
    assert len(ignored.what) < 110
    assert ignored.reason == "only deployment_status events are mapped (select just that event)"


def broken(section: str, member: str, value: Any) -> Any:
    document = load(SUCCESS)
    if value is ...:
        del document[section][member]
    else:
        document[section][member] = value
    return document


@pytest.mark.parametrize(
    ("document", "pointer", "reason"),
    [
        ([], "", "the body: must be a JSON object"),
        (broken("deployment", "id", True), "/deployment/id", "must be a string"),
        (broken("deployment", "id", ...), "/deployment/id", "is required"),
        (broken("deployment_status", "state", ...), "/deployment_status/state", "is required"),
        (broken("deployment", "created_at", "x"), "/deployment/created_at", "is not an ISO-8601"),
        (broken("deployment", "sha", ...), "/deployment/sha", "is required"),
        (broken("deployment", "sha", "f95f852b"), "/deployment/sha", "becomes git.commit_sha"),
        (broken("repository", "html_url", ...), "/repository/html_url", "is required"),
        (broken("repository", "name", 3), "/repository/name", "must be a string"),
        (
            broken("deployment_status", "created_at", "2019-05-15T15:20:00Z"),
            "/deployment_status/created_at",
            "becomes finished_at: is before started_at",
        ),
    ],
)
def test_a_success_that_cannot_be_mapped_names_its_member(
    document: Any, pointer: str, reason: str
) -> None:
    """Each unmappable deployment_status is a 400 pointing at the member and saying why."""
    with pytest.raises(UnmappableError) as caught:
        map_event("deployment_status", document, DEFAULTS)
    assert caught.value.error.pointer == pointer
    assert reason in caught.value.error.detail


def test_the_same_deployment_id_on_two_github_instances_is_two_deployments() -> None:
    """github.com and a GitHub Enterprise server count their deployment ids apart."""
    enterprise = load("github_deployment_status_success.json")
    enterprise["repository"]["html_url"] = "https://github.example.internal/Codertocat/Hello-World"
    assert deployed(enterprise)["id"] == "github-deployment:github.example.internal:145988746"
    assert (
        deployed(load("github_deployment_status_success.json"))["id"] != deployed(enterprise)["id"]
    )
