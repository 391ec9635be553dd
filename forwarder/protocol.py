"""The contract between producers and workers: Redis names and the stream entry format.

Everything a producer in any language needs to enqueue an event is here (and in the README):

    XADD {dora}:ingest * v 1 kind failure event '<JSON attributes>'
    XADD {dora}:ingest * v 1 kind deployment event '<JSON attributes>'
    XADD {dora}:ingest * v 1 kind deployment_patch event '{"id": ..., "change_failure": true}'
    XADD {dora}:ingest * v 1 kind deployment_delete event '{"id": ...}'

The operations beside the two POSTs (``OPERATION_KINDS``) travel the same stream and are
folded into the state of the event they act on, so that each id keeps one order: a PATCH
goes out after its deployment's POST, nothing of an id goes out after its DELETE.

``event`` holds Datadog's request attributes (``started_at``, ``services`` ...), either bare or
wrapped as ``{"data": {"attributes": {...}}}``; timestamps may be s, ms or ns integers or
ISO-8601 strings. Workers validate every entry; a bad one becomes a dead letter with a reason.

Every other Redis name workers and tools use is here too: the keys (``RedisKeys``), the fields
of the hashes behind them (``StateField``, ``GateField``, ``StatsField``), the fields of a
dead letter (``LetterField``) and the consumer group. The Lua scripts spell the same names as
literals; a test holds every literal they use to a name defined here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

ENTRY_VERSION: Final = "1"
"""Value of the ``v`` field; a worker dead-letters entries of a version it does not know."""

KIND_FAILURE: Final = "failure"
"""Value of the ``kind`` field for an incident (Datadog's ``/api/v2/dora/failure``)."""

KIND_DEPLOYMENT: Final = "deployment"
"""Value of the ``kind`` field for a deployment (Datadog's ``/api/v2/dora/deployment``)."""

KIND_DEPLOYMENT_PATCH: Final = "deployment_patch"
"""Mark a deployment as a change failure (or stable), with an optional remediation: Datadog's
``PATCH /api/v2/dora/deployments/{id}``. Folded into the deployment's state."""

KIND_DEPLOYMENT_PATCH_BY_VERSION: Final = "deployment_patch_by_version"
"""The same, naming the deployment by service + env + version: Datadog's preview
``PATCH /api/v2/dora/deployments``. Sent only where ``FORWARDER_PATCH_BY_VERSION=true``."""

PATCH_BY_VERSION_VARIABLE: Final = "FORWARDER_PATCH_BY_VERSION"
"""The setting that lets the preview PATCH by version through (``true``); off by default.
Producers (``Publisher``, ``publish``, ``serve``) refuse the kind while it is off."""

KIND_DEPLOYMENT_DELETE: Final = "deployment_delete"
"""Delete a deployment: ``DELETE /api/v2/dora/deployment/{id}``. Folded into its state."""

KIND_FAILURE_DELETE: Final = "failure_delete"
"""Delete an incident: ``DELETE /api/v2/dora/failure/{id}``. Folded into its state."""

POST_KINDS: Final = (KIND_FAILURE, KIND_DEPLOYMENT)
OPERATION_KINDS: Final = (
    KIND_DEPLOYMENT_PATCH,
    KIND_DEPLOYMENT_PATCH_BY_VERSION,
    KIND_DEPLOYMENT_DELETE,
    KIND_FAILURE_DELETE,
)
KINDS: Final = POST_KINDS + OPERATION_KINDS

TARGET_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""An id an operation names (use ``fullmatch``): ours are 16-128 characters, but Datadog
makes shorter ones (``z_RwVLi7v4Y`` in its examples) for events posted without one, and
those can be patched and deleted too. No ``/``: the id goes into a URL path and a state id."""

STATE_DEPLOYMENT_VERSION: Final = "deployment_version"
"""The kind of state a patch by version is kept in (its id derived from service, env and
version): it names no deployment id, so it has a state of its own."""

STATE_KINDS: Final = {
    KIND_FAILURE: KIND_FAILURE,
    KIND_DEPLOYMENT: KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_PATCH: KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_DELETE: KIND_DEPLOYMENT,
    KIND_FAILURE_DELETE: KIND_FAILURE,
    KIND_DEPLOYMENT_PATCH_BY_VERSION: STATE_DEPLOYMENT_VERSION,
}
"""The state each kind of entry is folded into: an operation joins the event it acts on."""

PATCH_FIELD_PREFIX: Final = "patch."
"""State fields ``patch.<attribute>`` hold the PATCH's attributes (``patch.change_failure``,
``patch.remediation``; a patch by version also ``patch.service``, ``patch.env``,
``patch.version``), merged field by field like the POST's."""

DELETE_FIELD: Final = "delete"
"""State field of a DELETE: the stream position (JSON string) of the entry that asked for it.
Fold drops every attribute older than it, and ignores any entry older than it."""

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
    An operation's is that of the event it acts on (``STATE_KINDS``).
    """
    state_kind = STATE_KINDS.get(kind, kind)
    return event_id if state_kind == KIND_FAILURE else f"{state_kind}{_KIND_SEPARATOR}{event_id}"


def parse_state_id(name: str) -> tuple[str, str]:
    """``(kind, event id)`` of a state id made by ``state_id``."""
    kind, separator, event_id = name.partition(_KIND_SEPARATOR)
    return (kind, event_id) if separator else (KIND_FAILURE, name)


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Names of every Redis key of one deployment.

    All keys share the hash tag ``{prefix}``: they hash to one slot. Redis Cluster is not
    supported (one primary is; see the README's "Supported Redis"), but the tag keeps a later
    move to it free of renamed keys.
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
        """Hash: the fleet-wide gate (closed until, why; Datadog's request budget; the breaker)."""
        return f"{self._tag}:gate"

    @property
    def stats(self) -> str:
        """Hash of counters and last success / last error, for ``status``."""
        return f"{self._tag}:stats"

    @property
    def app_key_waits(self) -> str:
        """Sorted set: state id -> since when its PATCH or DELETE waits for a usable
        application key (ms, Redis clock); ``status`` and metrics count them."""
        return f"{self._tag}:app_key_waits"

    @property
    def second_prefix(self) -> str:
        """Prefix of the strings ``<service> <env> <second>`` -> the id of the deployment
        that holds that second (Datadog keeps one deployment per service, env and second);
        each lives as long as a quiet state (``FORWARDER_RETENTION_S``)."""
        return f"{self._tag}:second:"

    @property
    def gitlab_prefix(self) -> str:
        """Prefix of the hashes ``<deployment id>`` -> ``running``/``success`` -> when GitLab
        reported that status (ns): ``serve`` sends a GitLab deployment once both are known.
        Each lives ``GITLAB_STATUS_KEEP_S`` after its last report."""
        return f"{self._tag}:gitlab:"

    @property
    def app_key_probe(self) -> str:
        """String: the claim token of the one PATCH or DELETE trying an application key
        Datadog refused, once its pause is over (expires with the request's time)."""
        return f"{self._tag}:app_key_probe"

    @property
    def version_prefix(self) -> str:
        """Prefix of the strings ``<service> <env> <version>`` -> the id of the deployment
        last folded with them: a PATCH by version waits while that deployment's POST is
        still to be sent. Each lives as long as a quiet state."""
        return f"{self._tag}:version:"

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
    def finished_prefix(self) -> str:
        """Prefix of the finish records (see ``finished``)."""
        return f"{self._tag}:finished:"

    def finished(self, incident_id: str) -> str:
        """String: the finish Datadog last accepted for an incident, kept far longer than its
        state (``FORWARDER_FINISHED_RETENTION_S``): ``<digest> <finished_at>``.

        ``digest`` is that of the whole delivered state (``-``: not known), ``finished_at``
        its JSON value. A state made again after it expired starts from it, so a late start
        can never undo a finish.
        """
        return self.finished_prefix + incident_id

    @property
    def celery_prefix(self) -> str:
        """Prefix under which Celery's own broker keys live (ticks only, never events)."""
        return f"{self._tag}:celery:"


# --- fields of the hashes and of dead letters ----------------------------------------------

ATTRIBUTE_PREFIX: Final = "a:"
"""``a:<attribute>`` in an incident's hash: the attribute's merged value (JSON)."""

POSITION_PREFIX: Final = "s:"
"""``s:<attribute>`` in an incident's hash: stream position of the entry that last wrote it."""


class StateField(StrEnum):
    """Bookkeeping fields of an incident's hash (``RedisKeys.incident``), beside ``a:``/``s:``."""

    VERSION = "version"
    """Grows by one each time a fold changes the merged state."""
    SENT = "sent"
    """The newest version Datadog answered 2xx for."""
    ATTEMPT = "attempt"
    """Failed attempts since the last success (absent: none)."""
    FIRST_MS = "first_ms"
    """When the first entry of the incident was folded (ms, Redis clock)."""
    FAILING_SINCE_MS = "failing_since_ms"
    """When the current run of failed attempts began (ms, Redis clock)."""
    PUBLISHED_MS = "pub_ms"
    """When the newest entry behind this version was published (its stream id's ms)."""
    CLAIM = "claim"
    """Token of the claim holding the incident (absent: not claimed)."""
    LAST_ERROR = "last_error"
    """Why the last attempt failed."""
    DEAD_VERSION = "dead_version"
    """The version last dead-lettered."""
    REMEMBERED = "remembered"
    """Digest of the state Datadog holds, from the finish record, in a state made again after
    it expired (absent once a request for it went out): equal attributes need no request."""
    DONE_POST = "done:post"
    """Digest of the POST attributes Datadog accepted last (absent: none since the state was
    made, or since a DELETE or a replay)."""
    DONE_PATCH = "done:patch"
    """Digest of the PATCH attributes Datadog accepted last."""
    DONE_DELETE = "done:delete"
    """The ``delete`` field's value (a stream position) of the DELETE Datadog accepted last."""
    SECOND_SLOT = "second_slot"
    """A deployment's ``<service> <env> <second>``, the second it holds (``second_prefix``)."""
    SAME_SECOND_AS = "same_second_as"
    """Another deployment holds this one's second: its id. This version is dead-lettered
    instead of overwriting that one at Datadog."""
    DOUBT_UNTIL_MS = "doubt_until_ms"
    """A request whose fate is in doubt may still land at the API until then (ms, Redis
    clock): the current version is sent once more, claimed at or after it (absent: none)."""


class GateField(StrEnum):
    """Fields of the fleet-wide gate hash (``RedisKeys.gate``); times in ms, Redis clock."""

    CLOSED_UNTIL_MS = "closed_until_ms"
    """Nothing is sent before this."""
    REASON = "reason"
    """Why it closed: ``rate_limit`` or ``auth``."""
    DETAIL = "detail"
    """What closed it, for people."""
    CLOSED_AT_MS = "closed_at_ms"
    LIMIT = "limit"
    """Requests per window, as X-RateLimit-Limit says."""
    REMAINING = "remaining"
    """Requests left in the current window (spent by claims)."""
    WINDOW_END_MS = "window_end_ms"
    PERIOD_MS = "period_ms"
    BUDGET_MS = "budget_ms"
    """When headers last described the window (knowledge older than ten minutes is dropped)."""
    UNLIMITED_MS = "unlimited_ms"
    """When an answer last came without rate-limit headers."""
    PROBE_UNTIL_MS = "probe_until_ms"
    """While nothing is known about limits, no second request goes out before this."""
    PROBE = "probe"
    """The incident that probe claimed: if it is settled without a request, the probe is
    given back at once."""
    TOKENS = "tokens"
    """Tokens of the optional fleet-wide ceiling (a float)."""
    TOKENS_MS = "tokens_ms"
    BREAKER_FAILURES = "breaker_failures"
    """Outage answers (5xx, 408, no answer) in a row across the fleet, since any other answer."""
    BREAKER_OPENED_MS = "breaker_opened_ms"
    """When the circuit breaker opened (absent: closed)."""
    BREAKER_PROBES = "breaker_probes"
    """Probes sent since it opened (each one doubles the wait before the next)."""
    BREAKER_PROBE_AT_MS = "breaker_probe_at_ms"
    """While open, no probe goes out before this."""
    BREAKER_PROBE = "breaker_probe"
    """The incident the last probe claimed: no second probe while its claim is in flight."""
    APP_KEY_CLOSED_UNTIL_MS = "app_key_closed_until_ms"
    """No PATCH or DELETE is sent before this: Datadog refused the application key (POSTs,
    which need only the API key, keep flowing)."""
    APP_KEY_DETAIL = "app_key_detail"
    """Why, for people."""


class StatsField(StrEnum):
    """Counters and last events in the stats hash (``RedisKeys.stats``), for ``status``."""

    DELIVERED = "delivered"
    RETRIES = "retries"
    DEAD_LETTERS = "dead_letters"
    LEASES_LAPSED = "leases_lapsed"
    ENTRIES_FOLDED = "entries_folded"
    UPDATES_UNCHANGED = "updates_unchanged"
    STATES_MISSING = "states_missing"
    """Due incidents whose state was gone when claimed (deleted by hand, or expired under an
    older version): each one a dead letter."""
    BREAKER_OPENED = "breaker_opened"
    """Times the circuit breaker opened."""
    BREAKER_PROBES = "breaker_probes"
    """Probes sent while it was open."""
    LAST_SUCCESS_MS = "last_success_ms"
    LAST_ERROR = "last_error"
    """``<incident id>: <reason>`` of the last failed or dead-lettered attempt."""
    LAST_ERROR_MS = "last_error_ms"
    SAME_SECOND = "same_second"
    """Deployments dead-lettered because another deployment of their service and env holds
    the same second at Datadog."""
    TICKS_DROPPED = "ticks_dropped"
    """Beat ticks dropped unrun because they waited too long (by Redis' clock)."""


class LetterField(StrEnum):
    """Fields of an entry of the dead-letter stream (``RedisKeys.dead``)."""

    SOURCE = "source"
    """What died: a ``LetterSource``."""
    ENTRY_ID = "entry_id"
    """The stream entry's id (source ``stream``)."""
    INCIDENT_ID = "incident_id"
    """The state id (source ``incident``)."""
    REASON = "reason"
    DETAIL = "detail"
    """JSON: HTTP status, response, merged attributes (source ``incident``)."""
    PAYLOAD = "payload"
    """JSON: the entry's raw fields (source ``stream``)."""
    AT_MS = "at_ms"
    PAYLOAD_ENCODING = "payload_encoding"
    """``utf-8`` or ``base64``: how ``payload`` holds the entry's names and values."""
    PAYLOAD_BYTES = "payload_bytes"
    """Raw bytes of all the entry's names and values, whether kept or cut."""
    PAYLOAD_TRUNCATED = "payload_truncated"
    """``1`` when ``payload`` was cut (it is bounded); replay cannot send it then."""


class LetterSource(StrEnum):
    """Values of a dead letter's ``source`` field."""

    STREAM = "stream"
    """An entry no worker could use."""
    INCIDENT = "incident"
    """An incident Datadog rejected, or whose start never came."""


# --- dead letters of stream entries (the `dead` stream, source `stream`) ------------------

PAYLOAD_UTF8: Final = "utf-8"
"""``payload_encoding`` of a letter whose entry's names and values are all UTF-8 text."""

PAYLOAD_BASE64: Final = "base64"
"""``payload_encoding`` of a letter whose payload holds the base64 of each raw name and value."""
