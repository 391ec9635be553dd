"""From the bytes of a request to a validated event: JSON, Datadog's envelope, the model. Pure.

The attributes are validated by the models Python producers use (``forwarder.to_event``),
so the endpoint accepts exactly what ``Publisher.publish`` accepts. The envelope is
required, as Datadog requires it: ``{"data": {"attributes": {...}}}``. Other members of
the envelope (JSON:API's ``meta``, a ``type``) are ignored, as Datadog's schema allows them,
except in a PATCH, whose ``data.type`` and ``data.id`` Datadog's schema defines: there a
``type`` must be Datadog's and an ``id`` must be the path's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from forwarder import Event, InvalidEventError, jsontext, to_event
from forwarder.protocol import KIND_DEPLOYMENT_PATCH, KIND_DEPLOYMENT_PATCH_BY_VERSION, POST_KINDS
from workers.ingest.jsonapi import ApiError, from_field_error

PATCH_TYPE: Final = "dora_deployment_patch_request"
"""``data.type`` of Datadog's PATCH bodies, by id and by version."""


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


def _envelope(document: Any) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """``data`` and its ``attributes`` of ``{"data": {"attributes": {...}}}``, or a 400."""
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
    return data, attributes


def attributes_of(document: Any) -> Mapping[str, Any]:
    """The attributes of ``{"data": {"attributes": {...}}}``, or a 400 naming what is missing."""
    return _envelope(document)[1]


def _validated(
    attributes: Mapping[str, Any],
    kind: str,
    parameter: str | None = None,
    found: Sequence[ApiError] = (),
) -> Event:
    """The event of ``kind``, or a 400 with ``found`` and every bad field.

    An ``id`` error names the path's ``parameter`` when the id came from the path.
    """
    errors = list(found)
    try:
        event = to_event({"data": {"attributes": attributes}}, kind)
    except InvalidEventError as exc:
        for error in exc.errors:
            if parameter is not None and error.field == "id":
                errors.append(ApiError(f"{parameter}: {error.reason}", None, parameter))
            else:
                errors.append(from_field_error(error))
        raise BadRequestError(errors) from None
    if errors:
        raise BadRequestError(errors)
    return event


def parse_event(body: bytes, kind: str) -> Event:
    """Validate a POST's body into the event of ``kind``, or raise ``BadRequestError``.

    ``kind`` is one of ``forwarder.protocol.KINDS`` (another is a ``ValueError``: a bug).
    """
    return _validated(attributes_of(_document(body)), kind)


def _type_errors(data: Mapping[str, Any]) -> list[ApiError]:
    if "type" in data and data["type"] != PATCH_TYPE:
        return [ApiError(f'data.type: must be "{PATCH_TYPE}" (or left out)', "/data/type")]
    return []


def parse_patch(body: bytes, deployment_id: str, parameter: str = "deployment_id") -> Event:
    """Datadog's ``DORADeploymentPatchRequest`` for the deployment its path names, or a 400.

    ``data.id``, when given, must be that deployment's id; the attributes name no id.
    """
    data, attributes = _envelope(_document(body))
    errors = _type_errors(data)
    if "id" in data and data["id"] != deployment_id:
        detail = f"data.id: must be the deployment id of the path ({parameter}), or left out"
        errors.append(ApiError(detail, "/data/id"))
    if "id" in attributes:
        detail = "id: is not a field Datadog accepts: the path names the deployment"
        errors.append(ApiError(detail, "/data/attributes/id"))
    named = {**{k: v for k, v in attributes.items() if k != "id"}, "id": deployment_id}
    return _validated(named, KIND_DEPLOYMENT_PATCH, parameter, errors)


def parse_patch_by_version(body: bytes) -> Event:
    """Datadog's ``DORADeploymentPatchByVersionRequest`` (service, env, version), or a 400."""
    data, attributes = _envelope(_document(body))
    errors = _type_errors(data)
    if "id" in data:
        detail = (
            "data.id: a PATCH by version names its deployment by service, env and version; "
            "to name it by id, PATCH /api/v2/dora/deployments/{deployment_id}"
        )
        errors.append(ApiError(detail, "/data/id"))
    return _validated(attributes, KIND_DEPLOYMENT_PATCH_BY_VERSION, found=errors)


def parse_deletion(kind: str, event_id: str, parameter: str) -> Event:
    """The DELETE of ``kind`` of the event its path names by ``parameter``, or a 400."""
    return _validated({"id": event_id}, kind, parameter)


def parse_request(kind: str, body: bytes, path_parameters: Mapping[str, str]) -> Event:
    """The event a write request of ``kind`` asks for: a POST or a PATCH by version from its
    body; a PATCH by id or a DELETE also from the one id its path names."""
    if kind in POST_KINDS:
        return parse_event(body, kind)
    if kind == KIND_DEPLOYMENT_PATCH_BY_VERSION:
        return parse_patch_by_version(body)
    ((parameter, event_id),) = path_parameters.items()
    if kind == KIND_DEPLOYMENT_PATCH:
        return parse_patch(body, event_id, parameter)
    return parse_deletion(kind, event_id, parameter)
