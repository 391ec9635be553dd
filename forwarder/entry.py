"""Encoding events into stream entries, and decoding (with reasons) what workers read back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast, overload

from pydantic import ValidationError

from forwarder import jsontext
from forwarder._errors import FieldError, InvalidEventError, field_errors
from forwarder._models import DeploymentEvent, IncidentEvent
from forwarder._operations import OPERATION_MODELS, Operation
from forwarder.jsontext import printable
from forwarder.protocol import (
    ENTRY_VERSION,
    FIELD_EVENT,
    FIELD_KIND,
    FIELD_VERSION,
    KIND_DEPLOYMENT,
    KIND_FAILURE,
    KINDS,
)

Event: TypeAlias = IncidentEvent | DeploymentEvent | Operation
"""Anything a producer can publish: an incident, a deployment, or an operation on one."""

_MODELS: dict[str, type[Event]] = {
    KIND_FAILURE: IncidentEvent,
    KIND_DEPLOYMENT: DeploymentEvent,
    **OPERATION_MODELS,
}


class InvalidEntryError(ValueError):
    """A stream entry a worker cannot use; the message is the dead letter's reason."""


@overload
def to_event(data: IncidentEvent | Mapping[str, Any]) -> IncidentEvent: ...


@overload
def to_event(data: Event | Mapping[str, Any], kind: str = KIND_FAILURE) -> Event: ...


def to_event(data: Event | Mapping[str, Any], kind: str = KIND_FAILURE) -> Event:
    """Validate ``data`` (bare attributes or Datadog's whole body) into an event of ``kind``.

    ``kind`` is ``failure`` (an ``IncidentEvent``, the default), ``deployment`` (a
    ``DeploymentEvent``) or an operation's kind (``forwarder.protocol.OPERATION_KINDS``); an
    event object is returned as it is. Raises ``InvalidEventError`` naming each bad field
    and why.
    """
    if isinstance(data, tuple(_MODELS.values())):
        return cast(Event, data)
    model = _MODELS.get(kind)
    if model is None:
        raise ValueError(f"unknown event kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not isinstance(data, Mapping):
        raise InvalidEventError([_whole(f"must be a JSON object, not {type(data).__name__}")])
    attributes = unwrap_body(data)
    try:
        return model.model_validate(attributes)
    except ValidationError as exc:
        raise InvalidEventError(field_errors(exc)) from None


def _whole(reason: str) -> FieldError:
    return FieldError("-", reason)


def unwrap_body(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The attributes of ``{"data": {"attributes": {...}}}``, or ``data`` itself when bare.

    A ``data.id`` (Datadog's PATCH body names its deployment there) joins the attributes as
    ``id``; ``data.type`` is not checked (the kind says what the body is).
    """
    inner = data.get("data")
    if set(data) == {"data"} and isinstance(inner, Mapping) and "attributes" in inner:
        attributes = inner["attributes"]
        if not isinstance(attributes, Mapping):
            raise InvalidEventError([_whole("data.attributes must be a JSON object")])
        if "id" in inner and "id" not in attributes:
            return {**attributes, "id": inner["id"]}
        return attributes
    return data


if TYPE_CHECKING:  # redis-py is loaded by whoever writes the entry, not by this module
    from redis.typing import EncodableT, FieldT

    EntryFields: TypeAlias = dict[FieldT, EncodableT]
    """A stream entry's fields, typed as redis-py's ``XADD`` takes them."""


def encode_entry(event: Event) -> EntryFields:
    """The stream entry fields for ``event`` (format version 1)."""
    # pydantic's serializer is about four times cheaper than json.dumps of a dumped dict,
    # and publish latency is what producers pay.
    body = event.model_dump_json(exclude_none=True)
    if isinstance(event, IncidentEvent | DeploymentEvent) and event.id is None:
        # A derived id goes first; ids are [A-Za-z0-9._:-] only, so nothing needs escaping.
        body = '{"id":"' + event.event_id + '",' + body[1:]
    return {FIELD_VERSION: ENTRY_VERSION, FIELD_KIND: event.KIND, FIELD_EVENT: body}


RawFields: TypeAlias = Mapping[bytes, bytes] | Mapping[str, str]
"""An entry's fields as read from the stream (redis-py: bytes) or written in a test (str)."""

_SHOWN_BYTES: Final = 40


def _raw(value: bytes | str) -> bytes:
    # surrogatepass: a str holding a lone surrogate still has bytes, which then fail UTF-8.
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def entry_bytes(fields: RawFields) -> dict[bytes, bytes]:
    """The entry's field names and values as the bytes Redis holds."""
    return {_raw(name): _raw(value) for name, value in fields.items()}


def _shown(value: bytes | None) -> str:
    """A short, printable form of a field's value for a reason (None when it is absent)."""
    if value is None:
        return "None"
    cut = printable(value[:_SHOWN_BYTES].decode("utf-8", "backslashreplace"))
    return f"'{cut}{'...' if len(value) > _SHOWN_BYTES else ''}'"


_VERSION: Final = ENTRY_VERSION.encode()
_KINDS: Final = {kind.encode(): kind for kind in KINDS}


def decode_entry(fields: RawFields) -> Event:
    """Parse one entry as read from the stream, or raise ``InvalidEntryError`` with the reason.

    Takes any bytes at all and raises nothing else. Only ``v``, ``kind`` and ``event`` are
    read; other fields are ignored, whatever their bytes.
    """
    raw = entry_bytes(fields)
    version = raw.get(FIELD_VERSION.encode())
    if version != _VERSION:
        raise InvalidEntryError(
            f"unknown entry format version {_shown(version)} (this worker reads {ENTRY_VERSION!r})"
        )
    kind = _KINDS.get(raw.get(FIELD_KIND.encode(), b""))
    if kind is None:
        raise InvalidEntryError(
            f"unknown event kind {_shown(raw.get(FIELD_KIND.encode()))} "
            f"(expected one of {', '.join(KINDS)})"
        )
    event = raw.get(FIELD_EVENT.encode())
    if event is None:
        raise InvalidEntryError(f"entry has no {FIELD_EVENT!r} field")
    try:
        data = jsontext.parse(jsontext.utf8(event))
    except jsontext.JsonTextError as exc:
        raise InvalidEntryError(f"event is not valid JSON: {exc}") from None
    try:
        return to_event(data, kind)
    except InvalidEventError as exc:
        raise InvalidEntryError(f"invalid event: {exc}") from None
