"""The write operations beside the two POSTs: PATCH a deployment, DELETE a deployment or an
incident. Each is validated here, as producers publish it, and folded by workers into the
state of the event it acts on (``forwarder.protocol.STATE_KINDS``)."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, ClassVar, Final, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from forwarder._identity import DERIVED_ID_PREFIX
from forwarder.protocol import (
    DELETE_FIELD,
    KIND_DEPLOYMENT_DELETE,
    KIND_DEPLOYMENT_PATCH,
    KIND_DEPLOYMENT_PATCH_BY_VERSION,
    KIND_FAILURE_DELETE,
    PATCH_FIELD_PREFIX,
    TARGET_ID_PATTERN,
)

MAX_TEXT_CHARS: Final = 1_000


def _check_target_id(value: str) -> str:
    if not TARGET_ID_PATTERN.fullmatch(value):
        raise PydanticCustomError(
            "target_id",
            "must be 1-128 characters of A-Z, a-z, 0-9 and . _ : - (got {length} characters)",
            {"length": len(value)},
        )
    return value


TargetId = Annotated[str, AfterValidator(_check_target_id)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]


class RemediationType(StrEnum):
    """How a failed deployment was remedied (Datadog's enum)."""

    ROLLBACK = "rollback"
    ROLLFORWARD = "rollforward"


class Remediation(BaseModel):
    """The deployment that remedied a failed one, named by its id or by its version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: RemediationType
    id: TargetId | None = None
    version: Text | None = None

    @model_validator(mode="after")
    def _one_name(self) -> Self:
        if (self.id is None) == (self.version is None):
            raise PydanticCustomError(
                "remediation_rule",
                "remediation names its deployment by id or by version: exactly one of them",
                {"field": "remediation"},
            )
        return self


class _Operation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    KIND: ClassVar[str]

    @property
    def event_id(self) -> str:
        """The id of the event this operation acts on."""
        raise NotImplementedError

    def attributes(self) -> dict[str, Any]:
        """The fields this operation writes into the state of the event it acts on."""
        raise NotImplementedError


class _Patch(_Operation):
    change_failure: bool | None = None
    remediation: Remediation | None = None

    def attributes(self) -> dict[str, Any]:
        """``patch.<attribute>`` for each attribute given (merged field by field)."""
        data = self.model_dump(mode="json", exclude_none=True, exclude={"id"})
        return {PATCH_FIELD_PREFIX + name: value for name, value in data.items()}


class DeploymentPatch(_Patch):
    """Mark deployment ``id`` as a change failure (or as stable), optionally with how it was
    remedied: ``PATCH /api/v2/dora/deployments/{id}``.

    Published for a deployment that also travels through the forwarder, it is sent only
    after that deployment's POST was accepted.
    """

    KIND: ClassVar[str] = KIND_DEPLOYMENT_PATCH

    id: TargetId
    change_failure: bool
    remediation: Remediation | None = None

    @property
    def event_id(self) -> str:
        """The deployment's id."""
        return self.id


class DeploymentPatchByVersion(_Patch):
    """The same, naming the deployment by ``service`` + ``env`` + ``version`` (Datadog patches
    the most recently finished match): Datadog's preview ``PATCH /api/v2/dora/deployments``."""

    KIND: ClassVar[str] = KIND_DEPLOYMENT_PATCH_BY_VERSION

    service: Text
    env: Text
    version: Text
    change_failure: bool
    remediation: Remediation | None = None

    @cached_property
    def event_id(self) -> str:
        """Derived from service, env and version: the same deployment, the same state."""
        basis = json.dumps(["version", self.env, self.service, self.version], separators=(",", ":"))
        return DERIVED_ID_PREFIX + hashlib.sha256(basis.encode()).hexdigest()[:40]


class _Deletion(_Operation):
    id: TargetId

    @property
    def event_id(self) -> str:
        """The id of the event to delete."""
        return self.id

    def attributes(self) -> dict[str, Any]:
        """The ``delete`` mark; the worker sets its value to the entry's stream position."""
        return {DELETE_FIELD: True}


class DeploymentDeletion(_Deletion):
    """Delete deployment ``id``: ``DELETE /api/v2/dora/deployment/{id}``. Whatever of it is
    still unsent is dropped; nothing of it is sent afterwards unless published again."""

    KIND: ClassVar[str] = KIND_DEPLOYMENT_DELETE


class IncidentDeletion(_Deletion):
    """Delete incident ``id``: ``DELETE /api/v2/dora/failure/{id}``, as for deployments."""

    KIND: ClassVar[str] = KIND_FAILURE_DELETE


Operation = DeploymentPatch | DeploymentPatchByVersion | DeploymentDeletion | IncidentDeletion
"""Any operation a producer can publish besides the two POSTs."""

OPERATION_MODELS: Final[dict[str, type[Operation]]] = {
    model.KIND: model
    for model in (DeploymentPatch, DeploymentPatchByVersion, DeploymentDeletion, IncidentDeletion)
}
