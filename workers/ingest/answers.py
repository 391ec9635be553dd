"""The answers every part of ``serve`` shares: Datadog's JSON error shape, and the 503 that
tells a producer to send again (a repeat is harmless: the same id folds into the same state).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from starlette.responses import JSONResponse

from workers.ingest.jsonapi import plain_errors

RETRY_AFTER_S: Final = 1
"""What a 503's ``Retry-After`` says: Redis' answer, or a free connection, is a moment away."""
UNREPLICATED: Final = (
    "answered 503: Redis stored the events but too few replicas acknowledged them "
    "(FORWARDER_PUBLISH_REPLICAS); is a replica down or far behind?"
)
"""Why a request got a 503 for a replica shortfall (logged at most once per interval)."""


def json_answer(status: int, body: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def error_answer(status: HTTPStatus, message: str | None = None, **headers: str) -> JSONResponse:
    """``{"errors": [message]}`` (the status' phrase when no message is given)."""
    return json_answer(status, plain_errors(message or status.phrase), headers)


def unavailable(message: str | None = None) -> JSONResponse:
    """503 with ``Retry-After``: nothing was acknowledged, send again."""
    return error_answer(
        HTTPStatus.SERVICE_UNAVAILABLE, message, **{"Retry-After": str(RETRY_AFTER_S)}
    )
