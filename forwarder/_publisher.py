"""Publishing: validate, then one XADD per event; never waits on Datadog."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import redis

from forwarder._errors import InvalidEventError, InvalidEventsError, PublishError
from forwarder._models import GitInfo, IncidentEvent
from forwarder._operations import Remediation
from forwarder._producer_checks import EventChecks, patch_by_version_from_env
from forwarder._published import DEFAULT_SPOOL_MAX_BYTES, DrainReport, Published
from forwarder.connection import redis_client
from forwarder.entry import Event, encode_entry, to_event
from forwarder.protocol import (
    DEFAULT_KEY_PREFIX,
    KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_DELETE,
    KIND_DEPLOYMENT_PATCH,
    KIND_DEPLOYMENT_PATCH_BY_VERSION,
    KIND_FAILURE_DELETE,
    RedisKeys,
)
from forwarder.replicas import DEFAULT_REPLICAS_TIMEOUT_S, Replicas, xadd_acknowledged

if TYPE_CHECKING:
    from forwarder._spooler import Spooler

log = logging.getLogger("dora_forwarder.publish")

EventLike = Event | Mapping[str, Any]
"""An event object, or a mapping of an incident's attributes (bare or as Datadog's body)."""

RemediationLike = Remediation | Mapping[str, Any]
"""A ``Remediation``, or its mapping: ``{"id": ..., "type": "rollback"}`` (or ``version``)."""

DEFAULT_TIMEOUT_S = 1.0


class Publisher:
    """Enqueues incident events into Redis for the workers to deliver.

    Thread-safe (redis-py pools its connections). Build one per process and reuse it::

        publisher = Publisher.from_url("redis://localhost:6379/0")
        incident_id = publisher.incident_started(services=["checkout"], env="prod")
        ...
        publisher.incident_finished(incident_id)
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        patch_by_version: bool | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        replicas: int = 0,
        replicas_timeout_s: float = DEFAULT_REPLICAS_TIMEOUT_S,
    ) -> None:
        """``patch_by_version`` lets Datadog's preview PATCH by version through; None reads
        ``FORWARDER_PATCH_BY_VERSION`` (a ``ValueError`` if it is neither true nor false).
        ``spool_dir``: while Redis does not answer, events wait on disk there (README,
        "Producer spool"), at most ``spool_max_bytes``; POSIX only.
        ``replicas`` (``FORWARDER_PUBLISH_REPLICAS``): a publish returns only once that many
        replicas hold the events, waiting at most ``replicas_timeout_s``, which must be
        shorter than ``client``'s socket timeout; else ``ReplicaShortfallError``.
        """
        self._redis = client
        self._replicas = Replicas.of(replicas, replicas_timeout_s)
        socket_timeout_s = client.get_connection_kwargs().get("socket_timeout")
        if socket_timeout_s:  # a cut WAIT would read as "Redis away": spooled, sent again
            self._replicas.check_socket_timeout(socket_timeout_s)
        self._stream = RedisKeys(key_prefix).ingest
        self._checks = EventChecks(
            patch_by_version_from_env() if patch_by_version is None else patch_by_version
        )
        self._spooler: Spooler | None = None
        if spool_dir is not None:
            from forwarder._spooler import Spooler  # noqa: PLC0415 - fcntl: POSIX only

            timeout_s = client.get_connection_kwargs().get("socket_timeout") or DEFAULT_TIMEOUT_S
            join_s = 2 * timeout_s + 1  # a drain under way ends within its Redis timeout
            self._spooler = Spooler(
                spool_dir, spool_max_bytes, self._enqueue, join_timeout_s=join_s
            )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        patch_by_version: bool | None = None,
        sentinel_master: str | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        replicas: int = 0,
        replicas_timeout_s: float = DEFAULT_REPLICAS_TIMEOUT_S,
    ) -> Self:
        """A publisher on its own connection pool; Redis calls give up after ``timeout_s``,
        which must outlast ``replicas_timeout_s`` when ``replicas`` are wanted.

        ``url`` may be Celery's Sentinel form (``sentinel://host:26379;sentinel://...``) with
        ``sentinel_master`` naming the monitored primary: the publisher then follows the
        primary through a failover. ``spool_dir`` and ``spool_max_bytes`` as for the
        constructor.
        """
        Replicas.of(replicas, replicas_timeout_s).check_socket_timeout(timeout_s)
        client = redis_client(
            url,
            sentinel_master=sentinel_master,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        return cls(
            client,
            key_prefix=key_prefix,
            patch_by_version=patch_by_version,
            spool_dir=spool_dir,
            spool_max_bytes=spool_max_bytes,
            replicas=replicas,
            replicas_timeout_s=replicas_timeout_s,
        )

    def publish(self, event: EventLike) -> Published:
        """Validate and enqueue one event; return its id (given, or derived), a ``str``
        whose ``spooled`` says it waits in the spool (Redis was away) rather than in Redis.

        A mapping is an incident's attributes; publish a ``DeploymentEvent`` (or call
        ``deployment``) for a deployment, an operation object (``DeploymentPatch`` ...) or
        call its method (``change_failure`` ...) for the rest. Raises ``InvalidEventError``
        (nothing enqueued) or ``PublishError``.
        """
        valid = to_event(event)
        if not isinstance(valid, IncidentEvent):  # incidents, the hot path, need no more
            self._check(valid)
        return Published(valid.event_id, self._send([valid]))

    def publish_many(self, events: Iterable[EventLike]) -> list[Published]:
        """Validate every event, enqueue the valid ones in one pipeline, return their ids.

        If any event is invalid, the valid ones are still enqueued and then an
        ``InvalidEventError`` is raised for the first bad one; its ``index`` says which, and
        ``InvalidEventsError.failures`` (the exception raised) lists them all.
        """
        valid: list[Event] = []
        failures: list[InvalidEventError] = []
        for index, event in enumerate(events):
            try:
                item = to_event(event)
                if not isinstance(item, IncidentEvent):
                    self._check(item)
                valid.append(item)
            except InvalidEventError as exc:
                failures.append(InvalidEventError(exc.errors, index=index))
        spooled = self._send(valid) if valid else False
        if failures:
            raise InvalidEventsError(failures, published=[e.event_id for e in valid])
        return [Published(item.event_id, spooled) for item in valid]

    def _send(self, events: Sequence[Event]) -> bool:
        """Enqueue, or (with a spool) spool while Redis is away; True when spooled."""
        if self._spooler is None:
            self._enqueue(events)
            return False
        return self._spooler.send(events)

    @property
    def spooled(self) -> int:
        """Events waiting in the spool for Redis (0 without a spool); reads the spool file."""
        return 0 if self._spooler is None else self._spooler.waiting

    def drain_spool(self) -> DrainReport | None:
        """``Spooler.drain``: send what the spool holds now, in this thread."""
        return None if self._spooler is None else self._spooler.drain()

    def _enqueue(self, events: Sequence[Event]) -> None:
        """One XADD per event, in one round trip (a pipeline); ``PublishError`` if Redis
        does not take them within the timeout, ``ReplicaShortfallError`` (one) if too few
        replicas acknowledged them (with their ``WAIT`` in the same round trip)."""
        with _redis_errors():
            if self._replicas.wanted:
                entries = [encode_entry(item) for item in events]
                xadd_acknowledged(self._redis, self._stream, entries, self._replicas)
                return
            if len(events) == 1:
                self._redis.xadd(self._stream, encode_entry(events[0]))
                return
            pipe = self._redis.pipeline(transaction=False)
            for item in events:
                pipe.xadd(self._stream, encode_entry(item))
            pipe.execute()

    def incident_started(
        self,
        *,
        services: Sequence[str] | None = None,
        team: str | None = None,
        started_at: object = None,
        id: str | None = None,
        name: str | None = None,
        severity: str | None = None,
        env: str | None = None,
        git: GitInfo | Mapping[str, str] | None = None,
        version: str | None = None,
        custom_tags: Sequence[str] | None = None,
    ) -> str:
        """Report that an incident started (``started_at`` defaults to now); return its id."""
        return self.publish(
            _drop_none(
                services=services,
                team=team,
                started_at=time.time_ns() if started_at is None else started_at,
                id=id,
                name=name,
                severity=severity,
                env=env,
                git=git,
                version=version,
                custom_tags=custom_tags,
            )
        )

    def incident_finished(
        self,
        id: str,
        *,
        finished_at: object = None,
        **attributes: Any,
    ) -> str:
        """Report that incident ``id`` is resolved (``finished_at`` defaults to now).

        Only the id is needed: the worker completes the event from the stored start. Other
        attributes (``severity`` ...) may be given to update them at the same time.
        """
        finished = time.time_ns() if finished_at is None else finished_at
        return self.publish({**attributes, "id": id, "finished_at": finished})

    def deployment(
        self,
        *,
        service: str,
        started_at: object,
        finished_at: object = None,
        id: str | None = None,
        env: str | None = None,
        team: str | None = None,
        version: str | None = None,
        git: GitInfo | Mapping[str, str] | None = None,
        custom_tags: Sequence[str] | None = None,
    ) -> str:
        """Report a deployment of ``service`` (``finished_at`` defaults to now); return its id.

        Datadog needs both times, so report a deployment once it has finished.
        """
        attributes = _drop_none(
            service=service,
            started_at=started_at,
            finished_at=time.time_ns() if finished_at is None else finished_at,
            id=id,
            env=env,
            team=team,
            version=version,
            git=git,
            custom_tags=custom_tags,
        )
        return self.publish(to_event(attributes, KIND_DEPLOYMENT))

    def change_failure(
        self,
        deployment_id: str,
        *,
        change_failure: bool = True,
        remediation: RemediationLike | None = None,
    ) -> str:
        """Mark deployment ``deployment_id`` as a change failure (``change_failure=False``:
        as stable again), optionally with the deployment that remedied it; return the id.

        ``remediation`` is a ``Remediation`` or a mapping, ``{"id": ..., "type": "rollback"}``
        or ``{"version": ..., "type": "rollforward"}``. Sent as Datadog's
        ``PATCH /api/v2/dora/deployments/{id}``, after the deployment's own POST when that
        travels through the forwarder too.
        """
        attributes = _drop_none(
            id=deployment_id, change_failure=change_failure, remediation=remediation
        )
        return self.publish(to_event(attributes, KIND_DEPLOYMENT_PATCH))

    def change_failure_by_version(
        self,
        *,
        service: str,
        env: str,
        version: str,
        change_failure: bool = True,
        remediation: RemediationLike | None = None,
    ) -> str:
        """The same, naming the deployment by ``service`` + ``env`` + ``version`` (Datadog
        marks the most recently finished match). Return the id the forwarder keeps it under.

        Datadog's preview ``PATCH /api/v2/dora/deployments``: refused (``InvalidEventError``)
        unless the publisher was made with ``patch_by_version=True`` or
        ``FORWARDER_PATCH_BY_VERSION=true``.
        """
        attributes = _drop_none(
            service=service,
            env=env,
            version=version,
            change_failure=change_failure,
            remediation=remediation,
        )
        return self.publish(to_event(attributes, KIND_DEPLOYMENT_PATCH_BY_VERSION))

    def delete_deployment(self, id: str) -> str:
        """Delete deployment ``id`` at Datadog; whatever of it is still unsent is dropped."""
        return self.publish(to_event({"id": id}, KIND_DEPLOYMENT_DELETE))

    def delete_incident(self, id: str) -> str:
        """Delete incident ``id`` at Datadog; whatever of it is still unsent is dropped."""
        return self.publish(to_event({"id": id}, KIND_FAILURE_DELETE))

    def _check(self, event: Event) -> None:
        self._checks.check(event)

    def close(self) -> None:
        """Stop the spool's drainer (what waits stays on disk); release the connections."""
        if self._spooler is not None:
            self._spooler.close()
        self._redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _drop_none(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Map redis-py's errors to ``PublishError`` at the boundary."""
    try:
        yield
    except redis.RedisError as exc:
        raise PublishError(f"could not enqueue the event in Redis: {exc}") from exc
