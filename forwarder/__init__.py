"""dora-forwarder's producer side: validate incident and deployment events, enqueue them.

Import this from services; it never imports Celery and never talks to Datadog. The
``Publisher`` (and with it redis-py) loads on first use, so that code which only validates
events, the workers' pure policy among it, imports no Redis client.
"""

from typing import TYPE_CHECKING, Any

from forwarder._errors import (
    FieldError,
    ForwarderError,
    InvalidEventError,
    InvalidEventsError,
    PublishError,
    ReplicaShortfallError,
    SpoolFullError,
)
from forwarder._identity import derive_deployment_id, derive_incident_id
from forwarder._models import DeploymentEvent, GitInfo, IncidentEvent
from forwarder._operations import (
    DeploymentDeletion,
    DeploymentPatch,
    DeploymentPatchByVersion,
    IncidentDeletion,
    Operation,
    Remediation,
    RemediationType,
)
from forwarder._published import DrainReport, Published
from forwarder.entry import Event, to_event

__all__ = [
    "DeploymentDeletion",
    "DeploymentEvent",
    "DeploymentPatch",
    "DeploymentPatchByVersion",
    "DrainReport",
    "Event",
    "FieldError",
    "ForwarderError",
    "GitInfo",
    "IncidentDeletion",
    "IncidentEvent",
    "InvalidEventError",
    "InvalidEventsError",
    "Operation",
    "PublishError",
    "Published",
    "Publisher",
    "Remediation",
    "RemediationType",
    "ReplicaShortfallError",
    "SpoolFullError",
    "derive_deployment_id",
    "derive_incident_id",
    "to_event",
]

if TYPE_CHECKING:
    from forwarder._publisher import Publisher

_LAZY = frozenset({"Publisher"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from forwarder import _publisher  # noqa: PLC0415 - redis-py only where it is used

        return getattr(_publisher, name)
    raise AttributeError(f"module 'forwarder' has no attribute {name!r}")
