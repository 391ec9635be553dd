"""The exceptions producers see.

ForwarderError
├── InvalidEventError   (also a ValueError: the event breaks a rule; nothing was enqueued)
│   └── InvalidEventsError  (some events of a batch were invalid; the valid ones were enqueued)
└── PublishError        (Redis did not take the event in time; retry or fail loudly)
    ├── ReplicaShortfallError  (Redis stored it, but too few replicas acknowledged it)
    └── SpoolFullError  (Redis was away and the producer spool had no room: nothing kept)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError

from forwarder.jsontext import printable

MESSAGE_FAILURES: Final = 5
"""Invalid events named in an ``InvalidEventsError`` message; ``failures`` has them all."""
MAX_FIELD_NAME_SHOWN: Final = 100
"""Characters of a field's name an error shows (a hostile name may be megabytes long)."""


class ForwarderError(Exception):
    """Base class of every error dora-forwarder raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule: the field (dotted path, ``-`` for the event itself) and why."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class InvalidEventError(ForwarderError, ValueError):
    """An event breaks Datadog's rules; ``errors`` lists each field and reason."""

    def __init__(self, errors: Sequence[FieldError], *, index: int | None = None) -> None:
        self.errors = tuple(errors)
        self.index = index
        where = f"event {index}: " if index is not None else ""
        super().__init__(where + "; ".join(str(error) for error in self.errors))


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


class PublishError(ForwarderError):
    """Redis could not be reached or refused the write within the publish timeout."""


class ReplicaShortfallError(PublishError):
    """The primary stored the events, but fewer replicas than asked acknowledged them in time.

    Publishing again is harmless (the same id folds into the same state), and is how to get
    the acknowledgement; spooling the events for later is not needed: Redis holds them.
    ``acknowledged`` replicas of ``wanted`` did, within ``timeout_ms``.
    """

    def __init__(self, acknowledged: int, wanted: int, timeout_ms: int) -> None:
        self.acknowledged = acknowledged
        self.wanted = wanted
        self.timeout_ms = timeout_ms
        super().__init__(shortfall_message(acknowledged, wanted, timeout_ms))


def shortfall_message(acknowledged: int, wanted: int, timeout_ms: int) -> str:
    """What a producer is told when ``WAIT`` counted too few replicas."""
    return (
        f"Redis stored the event but only {acknowledged} of {wanted} replica(s) acknowledged "
        f"it within {timeout_ms} ms (FORWARDER_PUBLISH_REPLICAS): a failover now could lose "
        "it; publish again: a repeat is harmless (the same id folds into the same state)"
    )


def _location(part: object) -> str:
    """One step of pydantic's error location: a name, an index, or a key that is no string."""
    if isinstance(part, int):
        return f"[{part}]"
    if isinstance(part, str):
        name = printable(part)
        return name if len(name) <= MAX_FIELD_NAME_SHOWN else name[:MAX_FIELD_NAME_SHOWN] + "..."
    return f"<a key of type {type(part).__name__}>"


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Turn pydantic's report into ``FieldError``s that name the field a user must change."""
    errors = []
    for error in exc.errors(include_url=False):
        path = ".".join(_location(part) for part in error["loc"]).replace(".[", "[")
        context = error.get("ctx") or {}
        field = path or str(context.get("field", "-"))
        reason = error["msg"]
        if not path and reason.startswith(field + " "):
            # Rules across fields say their field in the message (for pydantic's own report).
            reason = reason.removeprefix(field + " ")
        if error["type"] == "extra_forbidden":
            reason = "is not a field Datadog accepts"
        elif error["type"] == "missing":
            reason = "is required"
        elif error["type"] == "string_unicode":
            # Only a lone surrogate makes a Python str unencodable as UTF-8.
            reason = "is not valid Unicode text: it holds a lone surrogate"
        reason = printable(reason)
        errors.append(FieldError(field, reason))
    return errors


class SpoolFullError(PublishError):
    """Redis did not answer and the producer spool has no room for the event(s): neither
    Redis nor the spool holds them."""
