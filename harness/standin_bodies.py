"""What the stand-in accepts in each DORA write body, as Datadog checks it: the OpenAPI
schemas (`harness/data/dora-openapi.yaml`, a copy of /work/shared/reference/dora-openapi.yaml)
plus the rules Datadog enforces that the schemas state only in prose or lack.

A body that breaks one raises `Invalid(detail, pointer)`, which the stand-in answers as a
JSON:API 400 whose pointer names the offending value.
"""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml
from jsonschema.exceptions import best_match
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT4

if TYPE_CHECKING:
    from referencing._core import Resolver  # not re-exported by referencing

# A copy of Datadog's published spec (DORA paths only), so that a fresh clone is complete.
DEFAULT_OPENAPI_PATH: Final = Path(__file__).resolve().parent / "data" / "dora-openapi.yaml"
SCHEMA_OF_BODY: Final = {
    "dora_failure": "DORAFailureRequest",
    "dora_deployment": "DORADeploymentRequest",
    "dora_deployment_patch": "DORADeploymentPatchRequest",
    "dora_deployment_patch_by_version": "DORADeploymentPatchByVersionRequest",
}
"""The schema of each body the stand-in takes: a POST's (named by the event kind) or a PATCH's."""

PATCHED_FIELDS: Final = ("change_failure", "remediation")
"""The deployment attributes a PATCH sets (by id or by version)."""

# The schema states the id rule only in prose, but Datadog enforces it.
_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{16,128}")
_SPEC_URI = "urn:dora-openapi"
_SCHEMAS = "#/components/schemas/"

# The preview PATCH by version (Datadog client 2.59.0, PY 32609145d) is newer than the spec
# copy, as is `version` in the PATCH-by-id remediation: added when the document lacks them.
_REMEDIATION_TYPE = {"$ref": _SCHEMAS + "DORADeploymentPatchRemediationType"}
_BY_VERSION_SCHEMAS: Final[dict[str, Any]] = {
    "DORADeploymentPatchByVersionRequest": {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"$ref": _SCHEMAS + "DORADeploymentPatchByVersionRequestData"}},
    },
    "DORADeploymentPatchByVersionRequestData": {
        "type": "object",
        "required": ["type", "attributes"],
        "properties": {
            "type": {"$ref": _SCHEMAS + "DORADeploymentPatchRequestDataType"},
            "attributes": {"$ref": _SCHEMAS + "DORADeploymentPatchByVersionRequestAttributes"},
        },
    },
    "DORADeploymentPatchByVersionRequestAttributes": {
        "type": "object",
        "required": ["change_failure", "env", "service", "version"],
        "properties": {
            "change_failure": {"type": "boolean"},
            "env": {"type": "string"},
            "service": {"type": "string"},
            "version": {"type": "string"},
            "remediation": {"$ref": _SCHEMAS + "DORADeploymentPatchByVersionRemediation"},
        },
    },
    "DORADeploymentPatchByVersionRemediation": {
        "oneOf": [
            {"$ref": _SCHEMAS + "DORADeploymentPatchByVersionRemediationByID"},
            {"$ref": _SCHEMAS + "DORADeploymentPatchByVersionRemediationByVersion"},
        ]
    },
    "DORADeploymentPatchByVersionRemediationByID": {
        "type": "object",
        "required": ["id", "type"],
        "properties": {"id": {"type": "string"}, "type": _REMEDIATION_TYPE},
    },
    "DORADeploymentPatchByVersionRemediationByVersion": {
        "type": "object",
        "required": ["version", "type"],
        "properties": {"version": {"type": "string"}, "type": _REMEDIATION_TYPE},
    },
}


NOT_JSON: Final = object()
"""What `parse` makes of a body that is not JSON."""


class Invalid(Exception):
    """args: (detail, JSON pointer to the offending value)."""


def parse(raw: bytes) -> Any:
    """A request body as JSON, or `NOT_JSON`."""
    try:
        return json.loads(raw)
    except ValueError:  # also bodies that are not UTF-8
        return NOT_JSON


def bad_request(detail: str, pointer: str) -> dict[str, Any]:
    """Datadog's JSON:API 400 body."""
    error = {"status": "400", "title": "Bad Request", "detail": detail}
    return {"errors": [{**error, "source": {"pointer": pointer}}]}


def nanoseconds(timestamp: int) -> int:
    """Datadog infers the unit from the magnitude: seconds, milliseconds or nanoseconds."""
    if timestamp < 10**11:
        return timestamp * 10**9
    return timestamp * 10**6 if timestamp < 10**14 else timestamp


def attributes_of(body: Any) -> dict[str, Any] | None:
    """`data.attributes` of a JSON:API body, when it is an object."""
    data = body.get("data") if isinstance(body, dict) else None
    attributes = data.get("attributes") if isinstance(data, dict) else None
    return attributes if isinstance(attributes, dict) else None


def _inline_refs(node: Any, resolver: Resolver[Any]) -> Any:
    """Replace every `$ref` by its target (the DORA schemas are not recursive)."""
    if isinstance(node, list):
        return [_inline_refs(item, resolver) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        resolved = resolver.lookup(node["$ref"])
        return _inline_refs(resolved.contents, resolved.resolver)
    return {key: _inline_refs(value, resolver) for key, value in node.items()}


def _with_newer_schemas(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document["components"]["schemas"]
    for name, schema in _BY_VERSION_SCHEMAS.items():
        schemas.setdefault(name, copy.deepcopy(schema))
    remediation = schemas["DORADeploymentPatchRemediation"].setdefault("properties", {})
    remediation.setdefault("version", {"type": "string"})
    return document


def load_validators(openapi_path: str | Path | None = None) -> dict[str, OAS30Validator]:
    """One validator per body of `SCHEMA_OF_BODY`, its `#/components/...` refs resolved.

    They are resolved once here: per-request $ref lookups made validation 2.2x slower.
    """
    path = Path(openapi_path or os.environ.get("DORA_OPENAPI_PATH") or DEFAULT_OPENAPI_PATH)
    document = _with_newer_schemas(yaml.safe_load(path.read_text(encoding="utf-8")))
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI, DRAFT4.create_resource(document))
    resolver = registry.resolver(_SPEC_URI)
    return {
        body: OAS30Validator(
            _inline_refs({"$ref": _SCHEMAS + schema}, resolver),
            format_checker=oas30_format_checker,
        )
        for body, schema in SCHEMA_OF_BODY.items()
    }


@dataclass(frozen=True, slots=True)
class Selector:
    """The deployments a PATCH by version names."""

    service: str
    env: str
    version: str

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        """Whether a deployment's attributes carry this service, env and version."""
        named = (attributes.get("service"), attributes.get("env"), attributes.get("version"))
        return named == (self.service, self.env, self.version)


class Bodies:
    """Checks each write body against its schema and Datadog's further rules."""

    def __init__(self, openapi_path: str | Path | None = None) -> None:
        self._validators = load_validators(openapi_path)

    def event(self, kind: str, body: Any) -> str:
        """A POST's event: return its id (a new uuid4 when it has none), or raise `Invalid`."""
        self._check_schema(kind, body)
        attributes = body["data"]["attributes"]
        event_id = attributes.get("id")
        if event_id is not None and not _EVENT_ID.fullmatch(event_id):
            raise Invalid("id must be 16-128 characters of [A-Za-z0-9._:-]", "/data/attributes/id")
        if kind == "dora_failure" and not (attributes.get("services") or attributes.get("team")):
            raise Invalid("services or team is required", "/data/attributes/services")
        finished_at, started_at = attributes.get("finished_at"), attributes["started_at"]
        if finished_at is not None and nanoseconds(finished_at) < nanoseconds(started_at):
            raise Invalid("finished_at is before started_at", "/data/attributes/finished_at")
        return event_id or str(uuid.uuid4())

    def patch(self, body: Any, deployment_id: str) -> dict[str, Any]:
        """A PATCH by id: return the fields it sets, or raise `Invalid`."""
        _one_remediation_name(body)
        self._check_schema("dora_deployment_patch", body)
        if body["data"]["id"] != deployment_id:
            raise Invalid("data.id does not match the deployment id of the path", "/data/id")
        return _patched(body)

    def patch_by_version(self, body: Any) -> tuple[Selector, dict[str, Any]]:
        """A PATCH by version: return which deployments it names and the fields it sets."""
        _one_remediation_name(body)
        self._check_schema("dora_deployment_patch_by_version", body)
        attributes = body["data"]["attributes"]
        selector = Selector(attributes["service"], attributes["env"], attributes["version"])
        return selector, _patched(body)

    def _check_schema(self, name: str, body: Any) -> None:
        if body is NOT_JSON:
            raise Invalid("Request body is not valid JSON", "")
        if error := best_match(self._validators[name].iter_errors(body)):
            path = [str(p) for p in error.absolute_path]
            if error.validator == "required":  # point at the missing field, not its parent
                path += [f for f in error.validator_value if f not in error.instance][:1]
            pointer = "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)
            raise Invalid(error.message, pointer)


def _one_remediation_name(body: Any) -> None:
    """A remediation names its deployment by id or by version, not both (Datadog at HEAD).

    Checked before the schema so that the answer names the field whichever schema applies.
    """
    remediation = (attributes_of(body) or {}).get("remediation")
    if isinstance(remediation, dict) and "id" in remediation and "version" in remediation:
        raise Invalid(
            "remediation takes id or version, not both", "/data/attributes/remediation/version"
        )


def _patched(body: Any) -> dict[str, Any]:
    attributes = body["data"]["attributes"]
    return {field: attributes[field] for field in PATCHED_FIELDS if field in attributes}
