"""How each source's payload maps to events: the defaults, overridden by one TOML file.

The defaults need no file. ``FORWARDER_SOURCES_FILE`` names a TOML file with a table per
source (``[alertmanager]``, ``[pagerduty]``, ``[github]``, ``[gitlab]``) whose keys override
them; it is read once when ``serve`` starts, and an unknown key, a wrong type or a bad
matcher stops the start with the key and the reason.
"""

from __future__ import annotations

import tomllib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from forwarder.rules import MAX_CUSTOM_TAGS, CustomTag
from workers.ingest.sources.matchers import Matcher, MatcherError, parse_matcher


class SourcesFileError(ValueError):
    """The mapping file cannot be used; the message names the file, the key and the reason."""


def _matcher(text: str) -> str:
    try:
        parse_matcher(text)
    except MatcherError as exc:
        raise ValueError(str(exc)) from None
    return text


LabelNames = Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=20)]
Tags = Annotated[list[CustomTag], Field(max_length=MAX_CUSTOM_TAGS)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    tags: Tags = []
    """Static ``key:value`` tags added to every event of the source (``custom_tags``)."""


class AlertmanagerMapping(_Table):
    """Alert labels (and one annotation) -> incident fields; the first label present wins."""

    matchers: list[Annotated[str, AfterValidator(_matcher)]] = []
    """Which alerts are incidents (all must match); none: every alert sent to the receiver."""
    services_labels: LabelNames = ["service", "services", "job"]
    """Comma-separated values are several services."""
    team_labels: LabelNames = ["team"]
    env_labels: LabelNames = ["env", "environment"]
    severity_labels: LabelNames = ["severity"]
    name_label: str = "alertname"
    name_annotation: str = "summary"
    """Appended to the name after a colon when the alert has it."""
    tag_labels: LabelNames = []
    """Labels copied to ``custom_tags`` as ``label:value`` (e.g. ``region``)."""

    @cached_property
    def parsed_matchers(self) -> tuple[Matcher, ...]:
        """The matchers, parsed once (they were checked when the file was read)."""
        return tuple(parse_matcher(text) for text in self.matchers)


class PagerDutyMapping(_Table):
    """PagerDuty incident fields -> incident fields."""

    severity_from: list[Literal["priority", "urgency"]] = ["priority", "urgency"]
    """The first of these the incident has is its severity (priority's name, e.g. P1)."""
    env: str | None = None
    """PagerDuty has no environments: an ``env`` for every incident, if wanted."""
    team_from_teams: bool = True
    """The incident's first PagerDuty team -> ``team``."""


class GitHubMapping(_Table):
    """GitHub deployment fields -> deployment fields."""

    service_payload_field: str = "service"
    """A member of the deployment's ``payload`` that names the service (else the repository)."""


class GitLabMapping(_Table):
    """GitLab deployment fields -> deployment fields."""

    service_from: Literal["name", "path_with_namespace"] = "name"
    """Which of the project's names is the service."""


class SourcesMapping(BaseModel):
    """Every source's mapping; a table left out keeps that source's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    alertmanager: AlertmanagerMapping = AlertmanagerMapping()
    pagerduty: PagerDutyMapping = PagerDutyMapping()
    github: GitHubMapping = GitHubMapping()
    gitlab: GitLabMapping = GitLabMapping()


def _where(location: tuple[int | str, ...]) -> str:
    table, *rest = location
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest)
    return f"[{table}]{key}" if rest else f"{table}"


def parse_mapping(document: dict[str, Any], origin: str) -> SourcesMapping:
    """The mapping a parsed TOML document describes, or ``SourcesFileError``."""
    try:
        return SourcesMapping.model_validate(document)
    except ValidationError as exc:
        problems = [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SourcesFileError(f"{origin}:\n  " + "\n  ".join(problems)) from None


def load_mapping(path: str | None) -> SourcesMapping:
    """The mapping of ``FORWARDER_SOURCES_FILE`` (the defaults when unset), or
    ``SourcesFileError`` naming the file, the key and the reason."""
    if not path:
        return SourcesMapping()
    origin = f"FORWARDER_SOURCES_FILE ({path})"
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SourcesFileError(f"{origin}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SourcesFileError(f"{origin}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SourcesFileError(f"{origin}: is not valid TOML: {exc}") from None
    return parse_mapping(document, origin)
