"""Encoding events into stream entries, and decoding (with reasons) what workers read back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, overload

from pydantic import ValidationError

from forwarder._errors import FieldError, InvalidEventError, field_errors
from forwarder._models import DeploymentEvent, Event, IncidentEvent
from forwarder.protocol import (
    ENTRY_VERSION,
    FIELD_EVENT,
    FIELD_KIND,
    FIELD_VERSION,
    KIND_DEPLOYMENT,
    KIND_FAILURE,
    KINDS,
)

_MODELS: dict[str, type[IncidentEvent] | type[DeploymentEvent]] = {
    KIND_FAILURE: IncidentEvent,
    KIND_DEPLOYMENT: DeploymentEvent,
}


class InvalidEntryError(ValueError):
    """A stream entry a worker cannot use; the message is the dead letter's reason."""


@overload
def to_event(data: IncidentEvent | Mapping[str, Any]) -> IncidentEvent: ...


@overload
def to_event(data: Event | Mapping[str, Any], kind: str = KIND_FAILURE) -> Event: ...


def to_event(data: Event | Mapping[str, Any], kind: str = KIND_FAILURE) -> Event:
    """Validate ``data`` (bare attributes or Datadog's whole body) into an event of ``kind``.

    ``kind`` is ``failure`` (an ``IncidentEvent``, the default) or ``deployment`` (a
    ``DeploymentEvent``); an event object is returned as it is. Raises
    ``InvalidEventError`` naming each bad field and why.
    """
    if isinstance(data, IncidentEvent | DeploymentEvent):
        return data
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
    """The attributes of ``{"data": {"attributes": {...}}}``, or ``data`` itself when bare."""
    inner = data.get("data")
    if set(data) == {"data"} and isinstance(inner, Mapping) and "attributes" in inner:
        attributes = inner["attributes"]
        if not isinstance(attributes, Mapping):
            raise InvalidEventError([_whole("data.attributes must be a JSON object")])
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
    if event.id is None:
        # A derived id goes first; ids are [A-Za-z0-9._:-] only, so nothing needs escaping.
        body = '{"id":"' + event.event_id + '",' + body[1:]
    return {FIELD_VERSION: ENTRY_VERSION, FIELD_KIND: event.KIND, FIELD_EVENT: body}


def decode_entry(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> Event:
    """Parse one entry as read from the stream, or raise ``InvalidEntryError`` with the reason."""
    text = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    version = text.get(FIELD_VERSION)
    if version != ENTRY_VERSION:
        raise InvalidEntryError(
            f"unknown entry format version {version!r} (this worker reads {ENTRY_VERSION!r})"
        )
    kind = text.get(FIELD_KIND)
    if kind not in KINDS:
        raise InvalidEntryError(f"unknown event kind {kind!r} (expected one of {', '.join(KINDS)})")
    raw = text.get(FIELD_EVENT)
    if raw is None:
        raise InvalidEntryError(f"entry has no {FIELD_EVENT!r} field")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidEntryError(f"event is not valid JSON: {exc}") from None
    try:
        return to_event(data, kind)
    except InvalidEventError as exc:
        raise InvalidEntryError(f"invalid event: {exc}") from None
