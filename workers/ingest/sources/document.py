"""Reading another system's JSON: each value found by its path, or an error naming it. Pure.

A source's payload is whatever that system (or someone holding its secret) sent: any
member may be missing or of another type. Every read names the member it wanted, as a
JSON Pointer into the payload (``/alerts/3/startsAt``), so that a 400 or an ignored item
says exactly what was wrong and where.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic_core import PydanticCustomError

from forwarder import Event, InvalidEventError, to_event
from forwarder.jsontext import printable
from forwarder.rules import MAX_TEXT_CHARS, to_nanoseconds
from workers.ingest.jsonapi import ApiError

MAX_SHOWN_CHARS: Final = 80
"""Characters of a value from the payload an answer or a log line quotes."""


class UnmappableError(ValueError):
    """A payload (or one item of it) cannot be mapped; ``error`` names the member and why."""

    def __init__(self, pointer: str, reason: str) -> None:
        # A member's name is whatever was sent: a lone surrogate in it would make the
        # answer unencodable (a 500), a control character would reach the log as it is.
        pointer = printable(pointer)
        self.error = ApiError(f"{dotted(pointer) or 'the body'}: {reason}", pointer)
        super().__init__(self.error.detail)


def dotted(pointer: str) -> str:
    """``/alerts/3/startsAt`` as a reader writes it: ``alerts[3].startsAt``."""
    shown = ""
    for token in pointer.split("/")[1:]:
        name = token.replace("~1", "/").replace("~0", "~")
        shown += f"[{name}]" if name.isdigit() else (f".{name}" if shown else name)
    return shown


def cut(text: str) -> str:
    """Text from the payload, escaped and cut short: safe in an answer and a log line."""
    short = text[:MAX_SHOWN_CHARS] + ("..." if len(text) > MAX_SHOWN_CHARS else "")
    return short.encode("unicode_escape").decode("ascii")


def name_within_limit(text: str) -> str:
    """A free-text name (a title, a summary) cut to the events' limit, marked with ``...``.

    A name is description, not identity: one past the limit would otherwise refuse the
    whole event, and a refusal loses the incident (PagerDuty drops a 4xx without a retry,
    and disables the webhook after three in a row; Alertmanager drops the alert).
    """
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[: MAX_TEXT_CHARS - 3] + "..."


def shown(value: object) -> str:
    """A value from the payload, quoted and cut short (``cut``)."""
    return repr(cut(value if isinstance(value, str) else repr(value)))


@dataclass(frozen=True, slots=True)
class Node:
    """A value of the payload and where it is."""

    value: Any
    pointer: str = ""

    def _at(self, name: str | int) -> str:
        token = str(name).replace("~", "~0").replace("/", "~1")
        return f"{self.pointer}/{token}"

    def object(self) -> Node:
        """This node, which must be a JSON object."""
        if not isinstance(self.value, Mapping):
            raise UnmappableError(self.pointer, "must be a JSON object")
        return self

    def get(self, name: str) -> Node | None:
        """The member ``name`` of this object (None when absent or null)."""
        value = self.object().value.get(name)
        return None if value is None else Node(value, self._at(name))

    def member(self, name: str) -> Node:
        """The member ``name``, which must be present and not null."""
        found = self.get(name)
        if found is None:
            raise UnmappableError(self._at(name), "is required")
        return found

    def text(self, name: str) -> str:
        """The member ``name``, a non-empty string."""
        return self.member(name).string()

    def optional_text(self, name: str) -> str | None:
        """The member ``name`` when present: then a non-empty string."""
        found = self.get(name)
        return None if found is None or found.value == "" else found.string()

    def string(self) -> str:
        """This node, a non-empty string."""
        if not isinstance(self.value, str):
            raise UnmappableError(self.pointer, "must be a string")
        if not self.value.strip():
            raise UnmappableError(self.pointer, "must not be empty")
        return self.value

    def instant(self, name: str) -> int:
        """The member ``name``: a timestamp as Datadog takes them, in nanoseconds."""
        return self.member(name).as_instant()

    def as_instant(self) -> int:
        """This node, a timestamp as Datadog takes them (or a datetime), in nanoseconds."""
        try:
            return to_nanoseconds(self.value)
        except PydanticCustomError as exc:
            raise UnmappableError(self.pointer, exc.message()) from None

    def identifier(self, name: str) -> str:
        """The member ``name``: an id, as a string or an integer (GitHub's and GitLab's are)."""
        found = self.member(name)
        if isinstance(found.value, int) and not isinstance(found.value, bool):
            return str(found.value)
        return found.string()

    def items(self) -> Iterator[Node]:
        """The elements of this node, which must be a JSON array."""
        if not isinstance(self.value, Sequence) or isinstance(self.value, str):
            raise UnmappableError(self.pointer, "must be a JSON array")
        return (Node(value, self._at(index)) for index, value in enumerate(self.value))


def validated(attributes: Mapping[str, Any], kind: str, origin: Mapping[str, str]) -> Event:
    """The event of ``kind`` the mapped ``attributes`` make, or ``UnmappableError``.

    ``origin`` says where each attribute came from (its pointer in the payload), so that the
    error names the payload's member, not the forwarder's field.
    """
    try:
        return to_event({"data": {"attributes": attributes}}, kind)
    except InvalidEventError as exc:
        error = exc.errors[0]
        field = error.field.split(".")[0].split("[")[0]
        pointer = origin.get(field, "")
        raise UnmappableError(pointer, f"becomes {error.field}: {error.reason}") from None
