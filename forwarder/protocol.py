"""The contract between producers and workers: Redis key names and the stream entry format.

Everything a producer in any language needs to enqueue an event is here (and in the README):

    XADD {dora}:ingest * v 1 kind failure event '<JSON attributes>'
    XADD {dora}:ingest * v 1 kind deployment event '<JSON attributes>'

``event`` holds Datadog's request attributes (``started_at``, ``services`` ...), either bare or
wrapped as ``{"data": {"attributes": {...}}}``; timestamps may be s, ms or ns integers or
ISO-8601 strings. Workers validate every entry; a bad one becomes a dead letter with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ENTRY_VERSION: Final = "1"
"""Value of the ``v`` field; a worker dead-letters entries of a version it does not know."""

KIND_FAILURE: Final = "failure"
"""Value of the ``kind`` field for an incident (Datadog's ``/api/v2/dora/failure``)."""

KIND_DEPLOYMENT: Final = "deployment"
"""Value of the ``kind`` field for a deployment (Datadog's ``/api/v2/dora/deployment``)."""

KINDS: Final = (KIND_FAILURE, KIND_DEPLOYMENT)

_KIND_SEPARATOR: Final = "/"
"""Not allowed in ids, so a deployment's state id can never equal an incident's."""

FIELD_REPLAY: Final = "replay"
"""Set (to ``1``) on entries re-enqueued from dead letters: delivered again even if unchanged."""

FIELD_VERSION: Final = "v"
FIELD_KIND: Final = "kind"
FIELD_EVENT: Final = "event"

CONSUMER_GROUP: Final = "forwarder"
"""The one consumer group every worker of a deployment reads the ingest stream through."""

DEFAULT_KEY_PREFIX: Final = "dora"


def state_id(kind: str, event_id: str) -> str:
    """The name under which workers keep an event's merged state (and schedule it).

    An incident's is its id (as before deployments existed); a deployment's is prefixed.
    """
    return event_id if kind == KIND_FAILURE else f"{kind}{_KIND_SEPARATOR}{event_id}"


def parse_state_id(name: str) -> tuple[str, str]:
    """``(kind, event id)`` of a state id made by ``state_id``."""
    kind, separator, event_id = name.partition(_KIND_SEPARATOR)
    return (kind, event_id) if separator else (KIND_FAILURE, name)


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Names of every Redis key of one deployment.

    All keys share the hash tag ``{prefix}`` so that multi-key scripts run on Redis Cluster.
    """

    prefix: str = DEFAULT_KEY_PREFIX

    @property
    def _tag(self) -> str:
        return "{" + self.prefix + "}"

    @property
    def ingest(self) -> str:
        """Stream producers ``XADD`` to."""
        return f"{self._tag}:ingest"

    @property
    def due(self) -> str:
        """Sorted set: incident id -> when it is next due for delivery (ms, Redis clock)."""
        return f"{self._tag}:due"

    @property
    def inflight(self) -> str:
        """Sorted set: incident id -> when the claim on it lapses (ms, Redis clock)."""
        return f"{self._tag}:inflight"

    @property
    def dead(self) -> str:
        """Stream of dead letters: raw payload or incident state, with the reason."""
        return f"{self._tag}:dead"

    @property
    def gate(self) -> str:
        """Hash: the fleet-wide gate (closed until, why; Datadog's request budget)."""
        return f"{self._tag}:gate"

    @property
    def stats(self) -> str:
        """Hash of counters and last success / last error, for ``status``."""
        return f"{self._tag}:stats"

    @property
    def workers(self) -> str:
        """Sorted set: worker process (consumer name) -> when it last reported (ms, Redis clock)."""
        return f"{self._tag}:workers"

    @property
    def incident_prefix(self) -> str:
        """Prefix of the per-incident hashes (merged state, versions, attempts)."""
        return f"{self._tag}:incident:"

    def incident(self, incident_id: str) -> str:
        """Hash holding one incident's merged state and delivery bookkeeping."""
        return self.incident_prefix + incident_id

    @property
    def celery_prefix(self) -> str:
        """Prefix under which Celery's own broker keys live (ticks only, never events)."""
        return f"{self._tag}:celery:"


# --- dead letters of stream entries (the `dead` stream, source `stream`) ------------------

PAYLOAD_UTF8: Final = "utf-8"
"""``payload_encoding`` of a letter whose entry's names and values are all UTF-8 text."""

PAYLOAD_BASE64: Final = "base64"
"""``payload_encoding`` of a letter whose payload holds the base64 of each raw name and value."""
