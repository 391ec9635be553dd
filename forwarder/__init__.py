"""dora-forwarder's producer side: validate incident and deployment events, enqueue them.

Import this from services; it never imports Celery and never talks to Datadog.
"""

from forwarder._entry import to_event
from forwarder._errors import FieldError, ForwarderError, InvalidEventError, PublishError
from forwarder._identity import derive_deployment_id, derive_incident_id
from forwarder._models import DeploymentEvent, Event, GitInfo, IncidentEvent
from forwarder._publisher import InvalidEventsError, Publisher

__all__ = [
    "DeploymentEvent",
    "Event",
    "FieldError",
    "ForwarderError",
    "GitInfo",
    "IncidentEvent",
    "InvalidEventError",
    "InvalidEventsError",
    "PublishError",
    "Publisher",
    "derive_deployment_id",
    "derive_incident_id",
    "to_event",
]
