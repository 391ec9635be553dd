"""From the bytes of a request to a validated event: JSON, Datadog's envelope, the model. Pure.

The attributes are validated by the models Python producers use (``forwarder.to_event``),
so the endpoint accepts exactly what ``Publisher.publish`` accepts. The envelope is
required, as Datadog requires it: ``{"data": {"attributes": {...}}}``. Other members of
the envelope (JSON:API's ``meta``, a ``type``) are ignored, as Datadog's schema allows them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from forwarder import Event, InvalidEventError, jsontext, to_event
from workers.ingest.jsonapi import ApiError, from_field_error


class BadRequestError(ValueError):
    """The request cannot be enqueued; ``errors`` says why and where, one per problem."""

    def __init__(self, errors: Sequence[ApiError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(error.detail for error in self.errors))


def _document(body: bytes) -> Any:
    """The parsed JSON (UTF-8, -16 or -32, as RFC 8259 allows), or a 400 pointing at the body."""
    try:
        return jsontext.parse(body)
    except jsontext.JsonTextError as exc:
        raise BadRequestError([ApiError(f"the body is not valid JSON: {exc}", "")]) from None


def attributes_of(document: Any) -> Mapping[str, Any]:
    """The attributes of ``{"data": {"attributes": {...}}}``, or a 400 naming what is missing."""
    if not isinstance(document, Mapping):
        detail = 'the body must be a JSON object: {"data": {"attributes": {...}}}'
        raise BadRequestError([ApiError(detail, "")])
    data = document.get("data")
    if not isinstance(data, Mapping):
        reason = "is required" if "data" not in document else "must be a JSON object"
        raise BadRequestError([ApiError(f'data: {reason}: {{"attributes": {{...}}}}', "/data")])
    attributes = data.get("attributes")
    if not isinstance(attributes, Mapping):
        reason = "is required" if "attributes" not in data else "must be a JSON object"
        raise BadRequestError([ApiError(f"data.attributes: {reason}", "/data/attributes")])
    return attributes


def parse_event(body: bytes, kind: str) -> Event:
    """Validate a request body into the event of ``kind``, or raise ``BadRequestError``.

    ``kind`` is one of ``forwarder.protocol.KINDS`` (another is a ``ValueError``: a bug).
    """
    attributes = attributes_of(_document(body))
    try:
        return to_event({"data": {"attributes": attributes}}, kind)
    except InvalidEventError as exc:
        raise BadRequestError([from_field_error(error) for error in exc.errors]) from None
