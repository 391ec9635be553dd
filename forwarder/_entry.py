"""Encoding events into stream entries, and decoding (with reasons) what workers read back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from forwarder._errors import FieldError, InvalidEventError, field_errors
from forwarder._models import IncidentEvent
from forwarder.protocol import (
    ENTRY_VERSION,
    FIELD_EVENT,
    FIELD_KIND,
    FIELD_VERSION,
    KIND_FAILURE,
)


class InvalidEntryError(ValueError):
    """A stream entry a worker cannot use; the message is the dead letter's reason."""


def to_event(data: IncidentEvent | Mapping[str, Any]) -> IncidentEvent:
    """Validate ``data`` (bare attributes or Datadog's whole body) into an ``IncidentEvent``.

    Raises ``InvalidEventError`` naming each bad field and why.
    """
    if isinstance(data, IncidentEvent):
        return data
    if not isinstance(data, Mapping):
        raise InvalidEventError([_whole(f"must be a JSON object, not {type(data).__name__}")])
    attributes = unwrap_body(data)
    try:
        return IncidentEvent.model_validate(attributes)
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


def encode_entry(event: IncidentEvent) -> dict[str, str]:
    """The stream entry fields for ``event`` (format version 1)."""
    # pydantic's serializer is about four times cheaper than json.dumps of a dumped dict,
    # and publish latency is what producers pay.
    body = event.model_dump_json(exclude_none=True)
    if event.id is None:
        # A derived id goes first; ids are [A-Za-z0-9._:-] only, so nothing needs escaping.
        body = '{"id":"' + event.incident_id + '",' + body[1:]
    return {FIELD_VERSION: ENTRY_VERSION, FIELD_KIND: KIND_FAILURE, FIELD_EVENT: body}


def decode_entry(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> IncidentEvent:
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
    if kind != KIND_FAILURE:
        raise InvalidEntryError(f"unknown event kind {kind!r} (expected {KIND_FAILURE!r})")
    raw = text.get(FIELD_EVENT)
    if raw is None:
        raise InvalidEntryError(f"entry has no {FIELD_EVENT!r} field")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidEntryError(f"event is not valid JSON: {exc}") from None
    try:
        return to_event(data)
    except InvalidEventError as exc:
        raise InvalidEntryError(f"invalid event: {exc}") from None
