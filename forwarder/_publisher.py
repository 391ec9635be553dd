"""Publishing: validate, then one XADD per event; never waits on Datadog."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

import redis

from forwarder._errors import InvalidEventError, PublishError
from forwarder._models import GitInfo
from forwarder.entry import Event, encode_entry, to_event
from forwarder.protocol import DEFAULT_KEY_PREFIX, KIND_DEPLOYMENT, RedisKeys

EventLike = Event | Mapping[str, Any]
"""An event object, or a mapping of an incident's attributes (bare or as Datadog's body)."""

DEFAULT_TIMEOUT_S = 1.0
MESSAGE_FAILURES = 5
"""Invalid events named in an ``InvalidEventsError`` message; ``failures`` has them all."""


class Publisher:
    """Enqueues incident events into Redis for the workers to deliver.

    Thread-safe (redis-py pools its connections). Build one per process and reuse it::

        publisher = Publisher.from_url("redis://localhost:6379/0")
        incident_id = publisher.incident_started(services=["checkout"], env="prod")
        ...
        publisher.incident_finished(incident_id)
    """

    def __init__(self, client: redis.Redis, *, key_prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self._redis = client
        self._stream = RedisKeys(key_prefix).ingest

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Self:
        """A publisher on its own connection pool; Redis calls give up after ``timeout_s``."""
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        return cls(client, key_prefix=key_prefix)

    def publish(self, event: EventLike) -> str:
        """Validate and enqueue one event; return its id (given, or derived).

        A mapping is an incident's attributes; publish a ``DeploymentEvent`` (or call
        ``deployment``) for a deployment. Raises ``InvalidEventError`` (nothing enqueued)
        or ``PublishError``.
        """
        valid = to_event(event)
        with _redis_errors():
            self._redis.xadd(self._stream, encode_entry(valid))
        return valid.event_id

    def publish_many(self, events: Iterable[EventLike]) -> list[str]:
        """Validate every event, enqueue the valid ones in one pipeline, return their ids.

        If any event is invalid, the valid ones are still enqueued and then an
        ``InvalidEventError`` is raised for the first bad one; its ``index`` says which, and
        ``InvalidEventsError.failures`` (the exception raised) lists them all.
        """
        valid: list[Event] = []
        failures: list[InvalidEventError] = []
        for index, event in enumerate(events):
            try:
                valid.append(to_event(event))
            except InvalidEventError as exc:
                failures.append(InvalidEventError(exc.errors, index=index))
        if valid:
            with _redis_errors():
                pipe = self._redis.pipeline(transaction=False)
                for item in valid:
                    pipe.xadd(self._stream, encode_entry(item))
                pipe.execute()
        if failures:
            raise InvalidEventsError(failures, published=[e.event_id for e in valid])
        return [item.event_id for item in valid]

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

    def close(self) -> None:
        """Release the Redis connections."""
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


class InvalidEventsError(InvalidEventError):
    """Some events of a ``publish_many`` were invalid; the valid ones were enqueued."""

    def __init__(self, failures: Sequence[InvalidEventError], *, published: Sequence[str]) -> None:
        self.failures = tuple(failures)
        self.published = tuple(published)
        first = self.failures[0]
        super().__init__(first.errors, index=first.index)
        shown = " | ".join(str(failure) for failure in self.failures[:MESSAGE_FAILURES])
        more = len(self.failures) - MESSAGE_FAILURES
        if more > 0:
            shown += f" | ... and {more} more (all in .failures)"
        self.args = (
            f"{len(self.failures)} invalid event(s) not enqueued "
            f"({len(self.published)} valid ones were): {shown}",
        )


def _drop_none(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Map redis-py's errors to ``PublishError`` at the boundary."""
    try:
        yield
    except redis.RedisError as exc:
        raise PublishError(f"could not enqueue the event in Redis: {exc}") from exc
