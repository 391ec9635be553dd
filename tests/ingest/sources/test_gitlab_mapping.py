"""GitLab's deployment events -> deployments, field by field: GitLab's published example
(success) and its running twin (tests/data/sources), and hand-made variants of them."""

from __future__ import annotations

from typing import Any

import pytest

from forwarder import DeploymentEvent
from workers.ingest.sources.document import UnmappableError
from workers.ingest.sources.gitlab import DeploymentStatus, deployment, read_status
from workers.ingest.sources.mapped import Mapped
from workers.ingest.sources.mapping_file import GitLabMapping

from .payloads import load, utc_ns

HOOK = "Deployment Hook"
DEFAULTS = GitLabMapping()
SUCCESS_NS = utc_ns(2021, 4, 28, 19, 50, 0)  # "2021-04-28 21:50:00 +0200"
RUNNING_NS = utc_ns(2021, 4, 28, 19, 45, 0)  # "2021-04-28 21:45:00 +0200"
SHA = "279484c09fbe69ededfced8c1bb6e6d24616b468"
REPOSITORY = "http://10.126.0.2:3000/root/test-deployment-webhooks"
ATTRIBUTES = {
    "id": "gitlab-deployment:10.126.0.2:15",
    "service": "test-deployment-webhooks",
    "env": "staging",
    "git": {"repository_url": REPOSITORY, "commit_sha": SHA},
}
"""What the published example maps to, besides its times (GitLab's hook has no ref)."""


def status_of(document: Any, mapping: GitLabMapping = DEFAULTS) -> DeploymentStatus:
    status = read_status(HOOK, document, mapping)
    assert isinstance(status, DeploymentStatus)
    return status


def edited(name: str = "gitlab_deployment_success.json", **members: Any) -> Any:
    document = load(name)
    document.update(members)
    return document


@pytest.mark.parametrize(
    ("name", "status", "at_ns"),
    [
        ("gitlab_deployment_success.json", "success", SUCCESS_NS),
        ("gitlab_deployment_running.json", "running", RUNNING_NS),
    ],
)
def test_published_statuses_are_read_field_by_field(name: str, status: str, at_ns: int) -> None:
    """Both statuses give the deployment's key, their time in ns and its attributes."""
    read = status_of(load(name))
    assert (read.deployment_key, read.status, read.at_ns) == (
        "gitlab-deployment:10.126.0.2:15",
        status,
        at_ns,
    )
    assert read.attributes == ATTRIBUTES


def test_running_then_success_is_one_deployment_from_start_to_finish() -> None:
    """The deployment sent once the success is known: the running's time to the success's."""
    success = status_of(load("gitlab_deployment_success.json"))
    event = deployment(success, RUNNING_NS, success.at_ns)
    assert isinstance(event, DeploymentEvent)
    assert event.attributes() == {**ATTRIBUTES, "started_at": RUNNING_NS, "finished_at": SUCCESS_NS}


def test_success_whose_running_never_came_starts_and_finishes_at_once() -> None:
    """Without a running, the success's own time is both start and finish."""
    success = status_of(load("gitlab_deployment_success.json"))
    event = deployment(success, None, success.at_ns)
    assert event.attributes() == {**ATTRIBUTES, "started_at": SUCCESS_NS, "finished_at": SUCCESS_NS}


def test_running_later_than_success_is_clamped_to_the_finish() -> None:
    """A re-run (or clocks) giving a start after the finish: started_at = finished_at."""
    success = status_of(load("gitlab_deployment_success.json"))
    event = deployment(success, SUCCESS_NS + 60 * 10**9, success.at_ns)
    assert (event.attributes()["started_at"], event.attributes()["finished_at"]) == (
        SUCCESS_NS,
        SUCCESS_NS,
    )


@pytest.mark.parametrize(
    ("text", "at_ns"),
    [
        ("2021-04-28 21:50:00 +0200", SUCCESS_NS),
        ("2021-04-28 19:50:00 UTC", SUCCESS_NS),
        ("2021-04-28 12:50:00 -0700", SUCCESS_NS),
        ("2021-04-28T19:50:00Z", SUCCESS_NS),
        ("2021-04-28T21:50:00.250+02:00", SUCCESS_NS + 250_000_000),
        (" 2021-04-28 19:50:00 UTC ", SUCCESS_NS),
        (1619639400, SUCCESS_NS),
    ],
)
def test_status_changed_at_in_gitlabs_formats_and_iso(text: Any, at_ns: int) -> None:
    """Ruby's Time#to_s with an offset or UTC, ISO 8601, or a Unix timestamp."""
    assert status_of(edited(status_changed_at=text)).at_ns == at_ns


@pytest.mark.parametrize(
    ("commit_url", "sha"),
    [
        (f"https://gitlab.example.com/group/app/-/commit/{SHA}", SHA),
        (f"https://gitlab.example.com/group/app/-/commit/{SHA}/", SHA),
        (f"https://gitlab.example.com/group/app/-/commit/{SHA.upper()}", SHA.upper()),
        ("https://gitlab.example.com/group/app/-/commit/279484c0", None),  # short: not a SHA
        (f"https://gitlab.example.com/group/app/commit/{SHA}", None),
        (f"https://gitlab.example.com/group/app/-/commit/{SHA}?view=parallel", None),
        ("", None),
        (None, None),
    ],
)
def test_the_full_sha_comes_from_commit_url_or_there_is_no_git(
    commit_url: str | None, sha: str | None
) -> None:
    """Only a full SHA at the end of commit_url gives git; anything else leaves git out."""
    attributes = status_of(edited(commit_url=commit_url)).attributes
    expected = {"repository_url": REPOSITORY, "commit_sha": sha} if sha else None
    assert attributes.get("git") == expected


def test_no_git_without_the_projects_web_url() -> None:
    """A SHA without the project's web_url cannot name the repository: no git."""
    document = load("gitlab_deployment_success.json")
    del document["project"]["web_url"]
    assert "git" not in status_of(document).attributes


def test_service_from_path_with_namespace_and_static_tags() -> None:
    """[gitlab] service_from chooses the project's name or its path; tags are added."""
    mapping = GitLabMapping(service_from="path_with_namespace", tags=["source:gitlab"])
    attributes = status_of(load("gitlab_deployment_success.json"), mapping).attributes
    assert attributes == {
        **ATTRIBUTES,
        "service": "root/test-deployment-webhooks",
        "custom_tags": ["source:gitlab"],
    }


def test_absent_environment_leaves_env_out_and_a_ref_becomes_the_version() -> None:
    """environment is optional; a ref (absent from GitLab's hook today) is the version."""
    attributes = status_of(edited(environment=None, ref="v1.2.3")).attributes
    expected = {key: value for key, value in ATTRIBUTES.items() if key != "env"}
    assert attributes == {**expected, "version": "v1.2.3"}


@pytest.mark.parametrize("deployment_id", [15, "15"])
def test_integer_and_string_deployment_ids_are_the_same_deployment(deployment_id: Any) -> None:
    """GitLab's ids are integers; the key is the same for the digits as a string."""
    assert (
        status_of(edited(deployment_id=deployment_id)).deployment_key
        == "gitlab-deployment:10.126.0.2:15"
    )


@pytest.mark.parametrize("status", ["failed", "canceled", "created", "blocked"])
def test_other_statuses_are_ignored(status: str) -> None:
    """failed, canceled and others make no deployment: ignored, with the status named."""
    read = read_status(HOOK, edited(status=status), DEFAULTS)
    assert isinstance(read, Mapped)
    assert (read.events, read.refused) == ([], [])
    [ignored] = read.ignored
    assert ignored.what == f"GitLab deployment 15 status {status!r}"
    assert ignored.reason == "only running (its start) and success (its finish) make a deployment"


@pytest.mark.parametrize("event_name", ["Push Hook", "Pipeline Hook", ""])
def test_other_hooks_are_ignored_without_reading_the_body(event_name: str) -> None:
    """Any other X-Gitlab-Event is ignored (the body is not read), saying what to select."""
    read = read_status(event_name, None, DEFAULTS)
    assert isinstance(read, Mapped)
    [ignored] = read.ignored
    assert ignored.what == f"GitLab event {event_name!r}"
    assert "only Deployment Hook events are mapped" in ignored.reason


def without(member: str) -> Any:
    document = load("gitlab_deployment_success.json")
    del document[member]
    return document


@pytest.mark.parametrize(
    ("document", "pointer", "reason"),
    [
        ("text", "", "the body: must be a JSON object"),
        (without("deployment_id"), "/deployment_id", "is required"),
        (edited(deployment_id=1.5), "/deployment_id", "must be a string"),
        (without("status"), "/status", "is required"),
        (without("project"), "/project", "is required"),
        (edited(project={"id": 30}), "/project/name", "is required"),
        (without("status_changed_at"), "/status_changed_at", "is required"),
        (edited(status_changed_at="28/04/2021 21:50"), "/status_changed_at", "is not an ISO-8601"),
        (edited(status_changed_at="2021-04-28 21:50:00"), "/status_changed_at", "has no timezone"),
    ],
)
def test_a_hook_that_cannot_be_read_names_its_member(
    document: Any, pointer: str, reason: str
) -> None:
    """Each unreadable deployment hook is a 400 pointing at the member and saying why."""
    with pytest.raises(UnmappableError) as caught:
        read_status(HOOK, document, DEFAULTS)
    assert caught.value.error.pointer == pointer
    assert reason in caught.value.error.detail
