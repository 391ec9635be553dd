"""The events a producer publishes (incidents, deployments), Datadog's rules checked up front."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, ClassVar, Final, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from forwarder._identity import ID_PATTERN, derive_deployment_id, derive_incident_id
from forwarder._timestamps import to_nanoseconds
from forwarder.protocol import KIND_DEPLOYMENT, KIND_FAILURE

MAX_CUSTOM_TAGS: Final = 100
MAX_TAG_CHARS: Final = 200
"""Datadog's limit for any tag ("Tags can be up to 200 characters long", docs.datadoghq.com
getting_started/tagging, "Defining tags"); the DORA spec itself gives custom tags no length."""
MIN_SHA_CHARS: Final = 40
MAX_SHA_CHARS: Final = 64
"""Datadog's pattern is ``^[a-fA-F0-9]{40,}$`` (no maximum): 40 is a SHA-1, 64 a SHA-256
(git's other object format). Nothing longer names a commit, so nothing longer is stored."""
MAX_TEXT_CHARS: Final = 1_000
"""Our limit for the free-text fields, where Datadog documents none (``name``, ``team``...)."""
_SHA_PATTERN: Final = re.compile(r"[a-fA-F0-9]+")
_TAG_PATTERN: Final = re.compile(r"[^:\s][^:]*:.+")
"""``key:value``; matched whole (``fullmatch``), so no newline hides at the end."""


def _check_id(value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise PydanticCustomError(
            "incident_id",
            "must be 16-128 characters of A-Z, a-z, 0-9 and . _ : - (got {length} characters)",
            {"length": len(value)},
        )
    return value


def _check_sha(value: str) -> str:
    # The length first: a megabyte of hex is refused without a regex over it.
    if not MIN_SHA_CHARS <= len(value) <= MAX_SHA_CHARS:
        raise PydanticCustomError(
            "commit_sha",
            "must be a full commit SHA: 40 (SHA-1) to 64 (SHA-256) hexadecimal characters "
            "(got {length} characters)",
            {"length": len(value)},
        )
    if not _SHA_PATTERN.fullmatch(value):
        raise PydanticCustomError(
            "commit_sha", "must be a full commit SHA: hexadecimal characters only (0-9, a-f)"
        )
    return value


def _check_tag(value: str) -> str:
    if len(value) > MAX_TAG_CHARS:
        raise PydanticCustomError(
            "custom_tag",
            "must be at most {limit} characters, Datadog's limit for a tag "
            "(got {length} characters)",
            {"limit": MAX_TAG_CHARS, "length": len(value)},
        )
    if not value.isascii():
        # A plain str field is not checked for lone surrogates by pydantic, and no UTF-8
        # encoder takes one: refuse it here rather than fail when the entry is written.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PydanticCustomError(
                "string_unicode", "is not valid Unicode text: it holds a lone surrogate"
            ) from None
    if not _TAG_PATTERN.fullmatch(value):
        raise PydanticCustomError("custom_tag", "must follow the key:value pattern")
    return value


def _rule_error(field: str, reason: str) -> PydanticCustomError:
    # A rule across fields has no location of its own; `field` in the context lets the
    # error report name the field a user has to change.
    return PydanticCustomError("incident_rule", reason, {"field": field})


Timestamp = Annotated[int, BeforeValidator(to_nanoseconds)]
IncidentId = Annotated[str, AfterValidator(_check_id)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
CustomTag = Annotated[str, AfterValidator(_check_tag)]


class GitInfo(BaseModel):
    """Where the change came from; Datadog needs both fields when ``git`` is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repository_url: Text
    commit_sha: Annotated[str, AfterValidator(_check_sha)]


class IncidentEvent(BaseModel):
    """One message about an incident: its start, its finish, or both.

    Timestamps are accepted as ints (s, ms or ns), float seconds, ISO-8601 strings or aware
    datetimes, and held as integer nanoseconds. A finish may carry only ``id`` and
    ``finished_at``: the worker completes it from the stored start.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    KIND: ClassVar[str] = KIND_FAILURE

    id: IncidentId | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    services: Annotated[list[Text], Field(min_length=1, max_length=100)] | None = None
    team: Text | None = None
    name: Text | None = None
    severity: Text | None = None
    env: Text | None = None
    git: GitInfo | None = None
    version: Text | None = None
    custom_tags: Annotated[list[CustomTag], Field(max_length=MAX_CUSTOM_TAGS)] | None = None

    @model_validator(mode="after")
    def _datadog_rules(self) -> Self:
        if self.started_at is None:
            if self.id is None or self.finished_at is None:
                raise _rule_error(
                    "started_at",
                    "started_at is required, except in a finish that names its incident "
                    "by id (id + finished_at)",
                )
        elif not self.services and self.team is None:
            raise _rule_error("services", "either services or team is required")
        if (
            self.started_at is not None
            and self.finished_at is not None
            and self.finished_at < self.started_at
        ):
            raise _rule_error("finished_at", "finished_at is before started_at")
        return self

    @cached_property
    def incident_id(self) -> str:
        """The given id, or the one derived from env + services/team + started_at."""
        if self.id is not None:
            return self.id
        assert self.started_at is not None  # guaranteed by _datadog_rules  # noqa: S101
        return derive_incident_id(
            started_at_ns=self.started_at, env=self.env, services=self.services, team=self.team
        )

    @property
    def event_id(self) -> str:
        """The incident's id (``incident_id``), under the name every event kind shares."""
        return self.incident_id

    @property
    def is_finish_only(self) -> bool:
        """True for a finish that names only its incident and needs the stored start."""
        return self.started_at is None

    def attributes(self) -> dict[str, Any]:
        """Datadog's request attributes for this event, always with an ``id``."""
        data = self.model_dump(exclude_none=True)
        data["id"] = self.incident_id
        return data


class DeploymentEvent(BaseModel):
    """One deployment of a service: when it started and finished (both required).

    Timestamps are accepted as for incidents and held as integer nanoseconds. Publishing
    the same id again updates the deployment field by field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    KIND: ClassVar[str] = KIND_DEPLOYMENT

    id: IncidentId | None = None
    service: Text
    started_at: Timestamp
    finished_at: Timestamp
    env: Text | None = None
    team: Text | None = None
    version: Text | None = None
    git: GitInfo | None = None
    custom_tags: Annotated[list[CustomTag], Field(max_length=MAX_CUSTOM_TAGS)] | None = None

    @model_validator(mode="after")
    def _datadog_rules(self) -> Self:
        if self.finished_at < self.started_at:
            raise _rule_error("finished_at", "finished_at is before started_at")
        return self

    @cached_property
    def event_id(self) -> str:
        """The given id, or the one derived from service + env + started_at."""
        if self.id is not None:
            return self.id
        return derive_deployment_id(
            started_at_ns=self.started_at, env=self.env, service=self.service
        )

    def attributes(self) -> dict[str, Any]:
        """Datadog's request attributes for this deployment, always with an ``id``."""
        data = self.model_dump(exclude_none=True)
        data["id"] = self.event_id
        return data
