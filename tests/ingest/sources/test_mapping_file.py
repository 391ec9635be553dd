"""The sources' mapping file (FORWARDER_SOURCES_FILE): defaults without it, overrides with
it, and every error naming the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.ingest.sources.mapping_file import (
    AlertmanagerMapping,
    GitHubMapping,
    GitLabMapping,
    PagerDutyMapping,
    SourcesFileError,
    SourcesMapping,
    load_mapping,
    parse_mapping,
)


def written(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "sources.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("path", [None, ""])
def test_no_file_gives_the_documented_defaults(path: str | None) -> None:
    """Unset (or empty) FORWARDER_SOURCES_FILE: each source's defaults, no file read."""
    mapping = load_mapping(path)
    assert mapping == SourcesMapping()
    alertmanager = mapping.alertmanager
    assert alertmanager.matchers == []
    assert alertmanager.parsed_matchers == ()
    assert alertmanager.services_labels == ["service", "services", "job"]
    assert alertmanager.team_labels == ["team"]
    assert alertmanager.env_labels == ["env", "environment"]
    assert alertmanager.severity_labels == ["severity"]
    assert (alertmanager.name_label, alertmanager.name_annotation) == ("alertname", "summary")
    assert (alertmanager.tag_labels, alertmanager.tags) == ([], [])
    assert mapping.pagerduty == PagerDutyMapping(
        severity_from=["priority", "urgency"], env=None, team_from_teams=True, tags=[]
    )
    assert mapping.github == GitHubMapping(service_payload_field="service", tags=[])
    assert mapping.gitlab == GitLabMapping(service_from="name", tags=[])


def test_an_empty_file_keeps_every_default(tmp_path: Path) -> None:
    """A file with no tables changes nothing."""
    assert load_mapping(written(tmp_path, "# nothing yet\n")) == SourcesMapping()


def test_a_file_overrides_the_keys_it_sets_and_keeps_the_others(tmp_path: Path) -> None:
    """Each table's keys replace that source's defaults; keys and tables left out stay."""
    path = written(
        tmp_path,
        """
[alertmanager]
matchers = ['severity=~"critical|page"', 'team!=""']
services_labels = ["app"]
tag_labels = ["cluster"]
tags = ["source:alertmanager"]

[pagerduty]
severity_from = ["urgency"]
env = "prod"
team_from_teams = false

[gitlab]
service_from = "path_with_namespace"
""",
    )
    mapping = load_mapping(path)
    assert mapping.alertmanager == AlertmanagerMapping(
        matchers=['severity=~"critical|page"', 'team!=""'],
        services_labels=["app"],
        tag_labels=["cluster"],
        tags=["source:alertmanager"],
    )
    assert mapping.alertmanager.team_labels == ["team"]
    assert [str(m) for m in mapping.alertmanager.parsed_matchers] == [
        'severity=~"critical|page"',
        'team!=""',
    ]
    assert mapping.pagerduty == PagerDutyMapping(
        severity_from=["urgency"], env="prod", team_from_teams=False
    )
    assert mapping.github == GitHubMapping()
    assert mapping.gitlab == GitLabMapping(service_from="path_with_namespace")


def test_the_mapping_is_frozen() -> None:
    """Read once at start, then shared by every request: it cannot be changed."""
    mapping = load_mapping(None)
    with pytest.raises(ValueError, match="frozen"):
        mapping.github.service_payload_field = "app"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "[alertmanager]\nmatcherz = []\n",
            "[alertmanager].matcherz: Extra inputs are not permitted",
        ),
        ("[jira]\n", "jira: Extra inputs are not permitted"),
        (
            '[alertmanager]\nteam_labels = "team"\n',
            "[alertmanager].team_labels: Input should be a valid list",
        ),
        (
            '[alertmanager]\nservices_labels = [""]\n',
            "[alertmanager].services_labels[0]: String should have at least 1 character",
        ),
        (
            "[pagerduty]\nteam_from_teams = 2\n",
            "[pagerduty].team_from_teams: Input should be a valid boolean",
        ),
        (  # TOML has booleans: a string is a mistake, not a yes
            '[pagerduty]\nteam_from_teams = "no"\n',
            "[pagerduty].team_from_teams: Input should be a valid boolean",
        ),
        (
            '[pagerduty]\nseverity_from = ["color"]\n',
            "[pagerduty].severity_from[0]: Input should be 'priority' or 'urgency'",
        ),
        (
            '[gitlab]\nservice_from = "id"\n',
            "[gitlab].service_from: Input should be 'name' or 'path_with_namespace'",
        ),
        ("github = 3\n", "github: Input should be a valid dictionary"),
        ('[github]\ntags = ["nocolon"]\n', "[github].tags[0]: must follow the key:value pattern"),
        (
            '[alertmanager]\nmatchers = ["team!=\\"\\"", "sev~~x"]\n',
            "[alertmanager].matchers[1]: Value error, 'sev~~x' is not a matcher: write label, "
            'operator (= != =~ !~) and a quoted value, e.g. severity=~"critical|page"',
        ),
        (
            "[alertmanager]\nmatchers = ['severity=~\"(\"']\n",
            "[alertmanager].matchers[0]: Value error, 'severity=~\"(\"': "
            "the regular expression is invalid",
        ),
    ],
)
def test_a_bad_key_names_the_file_the_key_and_the_reason(
    tmp_path: Path, text: str, problem: str
) -> None:
    """Unknown keys and tables, wrong types, bad matchers and bad tags stop the start."""
    path = written(tmp_path, text)
    with pytest.raises(SourcesFileError) as caught:
        load_mapping(path)
    message = str(caught.value)
    assert message.startswith(f"FORWARDER_SOURCES_FILE ({path}):\n  ")
    assert problem in message


def test_every_bad_key_of_the_file_is_named_at_once(tmp_path: Path) -> None:
    """One start names every problem of the file, one per line."""
    path = written(tmp_path, '[github]\nservice = "x"\n[gitlab]\nservice_from = 1\n')
    with pytest.raises(SourcesFileError) as caught:
        load_mapping(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"FORWARDER_SOURCES_FILE ({path}):"
    assert [line.split(":")[0] for line in lines[1:]] == [
        "  [github].service",
        "  [gitlab].service_from",
    ]


def test_too_many_tags_is_refused_by_datadogs_limit(tmp_path: Path) -> None:
    """Static tags are capped at Datadog's limit for custom_tags."""
    tags = ", ".join(f'"k{index}:v"' for index in range(101))
    path = written(tmp_path, f"[github]\ntags = [{tags}]\n")
    with pytest.raises(SourcesFileError, match=r"\[github\]\.tags: List should have at most 100"):
        load_mapping(path)


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    """TOML's own error, with its line and column, after the file's name."""
    path = written(tmp_path, "[alertmanager\n")
    with pytest.raises(SourcesFileError) as caught:
        load_mapping(path)
    assert str(caught.value).startswith(f"FORWARDER_SOURCES_FILE ({path}): is not valid TOML: ")
    assert "line 1" in str(caught.value)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """TOML is UTF-8: other bytes are named as such, not as a crash."""
    path = written(tmp_path, b'[github]\ntags = ["a:\xff"]\n')
    with pytest.raises(SourcesFileError) as caught:
        load_mapping(path)
    assert str(caught.value) == f"FORWARDER_SOURCES_FILE ({path}): is not UTF-8 text"


@pytest.mark.parametrize(
    ("name", "reason"), [("absent.toml", "No such file or directory"), (".", "Is a directory")]
)
def test_an_unreadable_file_names_it_and_why(tmp_path: Path, name: str, reason: str) -> None:
    """A missing file or a directory: the path and the system's reason."""
    path = str(tmp_path / name)
    with pytest.raises(SourcesFileError) as caught:
        load_mapping(path)
    assert str(caught.value) == f"FORWARDER_SOURCES_FILE ({path}): cannot be read: {reason}"


def test_parse_mapping_names_the_origin_it_is_given() -> None:
    """A parsed document (not a file) reports under the origin the caller names."""
    with pytest.raises(SourcesFileError) as caught:
        parse_mapping({"pagerduty": {"env": 1}}, "the test document")
    assert (
        str(caught.value) == "the test document:\n  [pagerduty].env: Input should be a valid string"
    )
