"""Datadog's error bodies, built from the forwarder's validation errors. Pure.

Two shapes, as Datadog answers (``/work/shared/reference/DORA-API.md`` §3.2): a 400 carries
JSON:API error objects, one per bad field, each pointing at the field in the request
(``{"errors": [{"status": "400", "title": "Bad Request", "detail": ..., "source":
{"pointer": "/data/attributes/..."}}]}``, or ``{"parameter": "deployment_id"}`` for an id
in the path); every other error is a list of strings (``{"errors": ["Forbidden"]}``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from forwarder import FieldError

ATTRIBUTES_POINTER: Final = "/data/attributes"

# The only attributes of Datadog's write bodies that are objects; a dot after any other
# name is part of the name (an unknown field called "a.b" is one field, not two).
_OBJECT_ATTRIBUTES: Final = frozenset({"git", "remediation"})
_INDEX: Final = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class ApiError:
    """One JSON:API error of a 400: what is wrong, and where in the request: a JSON Pointer
    into the body, or the path ``parameter`` (neither: the request as a whole)."""

    detail: str
    pointer: str | None
    parameter: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The error object as Datadog writes it."""
        error: dict[str, Any] = {"status": "400", "title": "Bad Request", "detail": self.detail}
        source = {"pointer": self.pointer, "parameter": self.parameter}
        if any(value is not None for value in source.values()):
            error["source"] = {name: value for name, value in source.items() if value is not None}
        return error


def _escape(token: str) -> str:
    """A reference token of a JSON Pointer (RFC 6901): ``~`` and ``/`` escaped."""
    return token.replace("~", "~0").replace("/", "~1")


def _tokens(path: str) -> list[str]:
    """``services[2]`` -> ``["services", "2"]``."""
    return [_INDEX.sub("", path), *_INDEX.findall(path)]


def pointer_of(field: str) -> str:
    """The JSON Pointer of an attribute named as ``FieldError`` names it.

    ``git.commit_sha`` -> ``/data/attributes/git/commit_sha``; ``services[2]`` ->
    ``/data/attributes/services/2``; ``-`` (the attributes as a whole) -> ``/data/attributes``.
    """
    if field == "-":
        return ATTRIBUTES_POINTER
    head, dot, rest = field.partition(".")
    if dot and _INDEX.sub("", head) in _OBJECT_ATTRIBUTES:
        tokens = _tokens(head) + _tokens(rest)
    else:
        tokens = _tokens(field)
    return ATTRIBUTES_POINTER + "".join("/" + _escape(token) for token in tokens)


def from_field_error(error: FieldError) -> ApiError:
    """A validation error of an attribute as a JSON:API error pointing at that attribute."""
    detail = error.reason if error.field == "-" else str(error)
    return ApiError(detail, pointer_of(error.field))


def bad_request(errors: Iterable[ApiError]) -> dict[str, Any]:
    """The body of a 400: one error object per problem."""
    return {"errors": [error.as_json() for error in errors]}


def plain_errors(*messages: str) -> dict[str, Any]:
    """The body of any other error: ``{"errors": [<message>, ...]}``."""
    return {"errors": list(messages)}
