"""The ingest endpoint's PATCH and DELETE paths: Datadog's bodies in, entries out, reasons back.

The app runs in-process (httpx's ASGITransport, its lifespan entered as a server would)
against real Redis, so that each test can choose its settings and read the log records.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from pydantic import SecretStr

from config import load_settings
from forwarder import (
    DeploymentDeletion,
    DeploymentPatch,
    DeploymentPatchByVersion,
    IncidentDeletion,
    Remediation,
    RemediationType,
)
from forwarder.entry import decode_entry
from forwarder.protocol import RedisKeys
from harness import streams
from workers.ingest.app import create_app
from workers.ingest.keys import IngestKeys

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_env")]

KEY = f"ingest-key-{uuid.uuid4().hex}"
APP_KEY = f"app-key-{uuid.uuid4().hex}"
LIMIT_BYTES = 2048
DEPLOYMENT_ID = "z_RwVLi7v4Y"
PATCH = f"/api/v2/dora/deployments/{DEPLOYMENT_ID}"
BY_VERSION = "/api/v2/dora/deployments"
PATCH_TYPE = "dora_deployment_patch_request"
ATTRIBUTES: dict[str, Any] = {
    "change_failure": True,
    "remediation": {"id": "eG42zNIkVjM", "type": "rollback"},
}
VERSIONED: dict[str, Any] = {
    "change_failure": True,
    "service": "checkout",
    "env": "prod",
    "version": "v1.12.7",
}

Serving = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serving(redis_url: str, prefix: str) -> Serving:
    """The app on this test's prefix (settings overridden by keyword), and a client of it."""

    @asynccontextmanager
    async def serve(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = load_settings(
            **{
                "redis_url": redis_url,
                "key_prefix": prefix,
                "ingest_keys": SecretStr(KEY),
                "ingest_max_body_bytes": LIMIT_BYTES,
                "publish_timeout_s": 0.5,
                **overrides,
            }
        )
        app = create_app(settings, IngestKeys.from_settings(settings.ingest_keys, None))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as c:
                yield c

    return serve


def body_of(attributes: dict[str, Any], **data: Any) -> bytes:
    return json.dumps({"data": {**data, "attributes": attributes}}).encode()


def patch_body(**data: Any) -> bytes:
    """Datadog's DORADeploymentPatchRequest for DEPLOYMENT_ID (its members overridable)."""
    return body_of(ATTRIBUTES, **{"id": DEPLOYMENT_ID, "type": PATCH_TYPE, **data})


async def send(
    client: httpx.AsyncClient, method: str, path: str, body: bytes = b"", **headers: str
) -> httpx.Response:
    """A request as Datadog's clients send it: the ingest key, and an application key."""
    sent = {"DD-API-KEY": KEY, "DD-APPLICATION-KEY": APP_KEY, "Content-Type": "application/json"}
    sent.update({name.replace("_", "-"): value for name, value in headers.items()})
    return await client.request(method, path, content=body, headers=sent)


def enqueued(sync_redis: redis.Redis, keys: RedisKeys) -> list[object]:
    return [decode_entry(fields) for _, fields in streams.entries(sync_redis, keys.ingest)]


def only_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert (error["status"], error["title"]) == ("400", "Bad Request")
    return dict(error)


# --- 202 -----------------------------------------------------------------------------------


async def test_patch_is_enqueued_and_answered_as_datadog_does(
    serving: Serving, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """PATCH /deployments/{id}: 202 {"data": null} as JSON:API, one deployment_patch entry."""
    async with serving() as client:
        response = await send(client, "PATCH", PATCH, patch_body())
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/vnd.api+json"
    assert response.json() == {"data": None}
    assert enqueued(sync_redis, keys) == [
        DeploymentPatch(
            id=DEPLOYMENT_ID,
            change_failure=True,
            remediation=Remediation(id="eG42zNIkVjM", type=RemediationType.ROLLBACK),
        )
    ]


async def test_patch_without_data_id_or_type_takes_the_paths_id(
    serving: Serving, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """A body with attributes only (curl by hand) names the deployment of the path."""
    async with serving() as client:
        response = await send(client, "PATCH", PATCH, body_of({"change_failure": False}))
    assert response.status_code == 202
    assert enqueued(sync_redis, keys) == [DeploymentPatch(id=DEPLOYMENT_ID, change_failure=False)]


async def test_deletes_are_enqueued_and_answered_as_datadog_does(
    serving: Serving, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """DELETE /deployment/{id} and /failure/{id}: 202 {"data": null}, one entry each."""
    async with serving() as client:
        deployment = await send(client, "DELETE", "/api/v2/dora/deployment/deployment-0001")
        failure = await send(client, "DELETE", "/api/v2/dora/failure/incident-00000001")
    for response in (deployment, failure):
        assert response.status_code == 202
        assert response.headers["content-type"] == "application/vnd.api+json"
        assert response.json() == {"data": None}
    assert enqueued(sync_redis, keys) == [
        DeploymentDeletion(id="deployment-0001"),
        IncidentDeletion(id="incident-00000001"),
    ]


async def test_a_deletes_body_is_ignored_but_bounded(
    serving: Serving, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """Whatever a DELETE's body says is ignored; past the size limit it is a 413 all the same."""
    async with serving() as client:
        ignored = await send(client, "DELETE", "/api/v2/dora/failure/incident-00000001", b"[1")
        large = await send(
            client, "DELETE", "/api/v2/dora/failure/incident-00000002", b"x" * (LIMIT_BYTES + 1)
        )
    assert ignored.status_code == 202
    assert large.status_code == 413
    assert enqueued(sync_redis, keys) == [IncidentDeletion(id="incident-00000001")]


async def test_patch_by_version_where_it_is_on(
    serving: Serving, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """With FORWARDER_PATCH_BY_VERSION on: 202 {"data": null}, one entry of its kind."""
    remediation = {"version": "v1.12.8", "type": "rollforward"}
    async with serving(patch_by_version=True) as client:
        response = await send(
            client, "PATCH", BY_VERSION, body_of({**VERSIONED, "remediation": remediation})
        )
    assert response.status_code == 202
    assert response.json() == {"data": None}
    assert enqueued(sync_redis, keys) == [
        DeploymentPatchByVersion(
            **VERSIONED,
            remediation=Remediation(version="v1.12.8", type=RemediationType.ROLLFORWARD),
        )
    ]


# --- 400 -----------------------------------------------------------------------------------


async def test_patch_by_version_where_it_is_off_says_what_to_set(
    serving: Serving, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """Off (the default): a 400 naming the setting and the PATCH by id; nothing enqueued."""
    async with serving() as client:
        response = await send(client, "PATCH", BY_VERSION, body_of(VERSIONED, type=PATCH_TYPE))
    error = only_error(response)
    assert "FORWARDER_PATCH_BY_VERSION=true" in error["detail"]
    assert "PATCH /api/v2/dora/deployments/{deployment_id}" in error["detail"]
    assert "source" not in error  # the request as a whole, not a field of it
    assert enqueued(sync_redis, keys) == []


@pytest.mark.parametrize(
    ("body", "pointer", "detail"),
    [
        (patch_body(id="another-deployment"), "/data/id", "data.id: must be the deployment id"),
        (patch_body(id=7), "/data/id", "data.id: must be the deployment id"),
        (patch_body(type="dora_deployment"), "/data/type", 'data.type: must be "dora_deploy'),
        (
            body_of({**ATTRIBUTES, "id": DEPLOYMENT_ID}),
            "/data/attributes/id",
            "id: is not a field Datadog accepts",
        ),
        (body_of({}), "/data/attributes/change_failure", "change_failure: is required"),
        (
            body_of({"change_failure": "yes please"}),
            "/data/attributes/change_failure",
            "change_failure: Input should be a valid boolean",
        ),
        (
            body_of({**ATTRIBUTES, "remediation": {"id": "a", "type": "revert"}}),
            "/data/attributes/remediation/type",
            "remediation.type: Input should be 'rollback' or 'rollforward'",
        ),
        (
            body_of({**ATTRIBUTES, "remediation": {"id": "a", "version": "v", "type": "rollback"}}),
            "/data/attributes/remediation",
            "remediation: remediation names its deployment by id or by version",
        ),
        (
            body_of({**ATTRIBUTES, "remediation": {"id": "a/b", "type": "rollback"}}),
            "/data/attributes/remediation/id",
            "remediation.id: must be 1-128 characters",
        ),
        (body_of({**ATTRIBUTES, "colour": "red"}), "/data/attributes/colour", "colour: is not"),
        (json.dumps(ATTRIBUTES).encode(), "/data", "data: is required"),
        (b"change_failure=true", "", "the body is not valid JSON"),
    ],
)
async def test_bad_patch_is_a_400_pointing_at_the_field(
    serving: Serving,
    sync_redis: redis.Redis,
    keys: RedisKeys,
    body: bytes,
    pointer: str,
    detail: str,
) -> None:
    """One JSON:API error naming the member and why, pointing at it; nothing enqueued."""
    async with serving() as client:
        error = only_error(await send(client, "PATCH", PATCH, body))
    assert error["source"] == {"pointer": pointer}
    assert error["detail"].startswith(detail)
    assert enqueued(sync_redis, keys) == []


@pytest.mark.parametrize(
    ("body", "pointer", "detail"),
    [
        (body_of({**VERSIONED, "service": None}), "/data/attributes/service", "service: Input"),
        (
            body_of({k: v for k, v in VERSIONED.items() if k != "version"}),
            "/data/attributes/version",
            "version: is required",
        ),
        (body_of(VERSIONED, id=DEPLOYMENT_ID), "/data/id", "data.id: a PATCH by version names"),
        (
            body_of({**VERSIONED, "id": DEPLOYMENT_ID}),
            "/data/attributes/id",
            "id: is not a field Datadog accepts",
        ),
    ],
)
async def test_bad_patch_by_version_is_a_400_pointing_at_the_field(
    serving: Serving,
    sync_redis: redis.Redis,
    keys: RedisKeys,
    body: bytes,
    pointer: str,
    detail: str,
) -> None:
    """Where it is on, the by-version body is held to its own model."""
    async with serving(patch_by_version=True) as client:
        error = only_error(await send(client, "PATCH", BY_VERSION, body))
    assert error["source"] == {"pointer": pointer}
    assert error["detail"].startswith(detail)
    assert enqueued(sync_redis, keys) == []


HOSTILE_IDS = [
    "x" * 129,
    "has space",
    "\x1b[31mred",
    "caf\u00e9",
    "quote\"and'",
    "nul\x00",
    "%00",
    "\u202eevil",
]


@pytest.mark.parametrize("hostile", HOSTILE_IDS, ids=lambda value: repr(value)[:20])
@pytest.mark.parametrize(
    ("method", "route", "parameter"),
    [
        ("PATCH", "/api/v2/dora/deployments/", "deployment_id"),
        ("DELETE", "/api/v2/dora/deployment/", "deployment_id"),
        ("DELETE", "/api/v2/dora/failure/", "failure_id"),
    ],
)
async def test_hostile_id_in_the_path_is_a_400_naming_it(
    serving: Serving,
    sync_redis: redis.Redis,
    keys: RedisKeys,
    caplog: pytest.LogCaptureFixture,
    method: str,
    route: str,
    parameter: str,
    hostile: str,
) -> None:
    """An id no event can have: 400 naming the path parameter; the log escapes what it shows."""
    caplog.set_level(logging.DEBUG)
    async with serving() as client:
        path = route + quote(hostile, safe="")  # as a client sends it; the app sees it decoded
        error = only_error(await send(client, method, path, body_of(ATTRIBUTES)))
    assert error["source"] == {"parameter": parameter}
    assert error["detail"].startswith(f"{parameter}: must be 1-128 characters of A-Z")
    assert enqueued(sync_redis, keys) == []
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"rejected {method} {route}" in logged
    assert "\x1b" not in logged
    assert "\u202e" not in logged


async def test_a_slash_in_an_id_is_another_path(serving: Serving) -> None:
    """An id with an encoded slash decodes into a path Datadog does not have: 404."""
    async with serving() as client:
        response = await send(client, "DELETE", "/api/v2/dora/failure/a%2Fb")
    assert response.status_code == 404
    assert response.json() == {"errors": ["Not Found"]}


async def test_a_huge_id_is_refused_and_not_logged_whole(
    serving: Serving, caplog: pytest.LogCaptureFixture
) -> None:
    """The log shows the start of a huge path (60,000 characters: near httpx's limit), not all."""
    caplog.set_level(logging.INFO, logger="dora_forwarder.ingest")
    async with serving() as client:
        response = await send(client, "DELETE", "/api/v2/dora/failure/" + "a" * 60_000)
    assert only_error(response)["source"] == {"parameter": "failure_id"}
    assert max(len(record.getMessage()) for record in caplog.records) < 1_000


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"DD-APPLICATION-KEY": KEY}, {"DD-API-KEY": "not-a-key", "DD-APPLICATION-KEY": KEY}],
    ids=["none", "ingest-key-as-app-key", "wrong-api-key"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("PATCH", PATCH), ("PATCH", BY_VERSION), ("DELETE", "/api/v2/dora/failure/incident-01")],
)
async def test_only_the_api_key_header_lets_a_request_in(
    serving: Serving,
    sync_redis: redis.Redis,
    keys: RedisKeys,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    """The ingest key goes in DD-API-KEY, as for the POSTs; 403 otherwise, even by version."""
    async with serving() as client:
        response = await client.request(method, path, content=patch_body(), headers=headers)
    assert response.status_code == 403
    assert response.json() == {"errors": ["Forbidden"]}
    assert enqueued(sync_redis, keys) == []


async def test_application_key_is_ignored_and_never_logged(
    serving: Serving, caplog: pytest.LogCaptureFixture
) -> None:
    """With or without DD-APPLICATION-KEY, a request with the ingest key is taken; the
    application key appears in no log record, accepted or refused."""
    caplog.set_level(logging.DEBUG)
    async with serving() as client:
        with_app_key = await send(client, "PATCH", PATCH, patch_body())
        without = await client.patch(PATCH, content=patch_body(), headers={"DD-API-KEY": KEY})
        refused = await send(client, "DELETE", "/api/v2/dora/failure/short/", DD_API_KEY="nope")
        wrong = await send(client, "DELETE", "/api/v2/dora/failure/incident-01", DD_API_KEY="no")
        bad = await send(client, "PATCH", PATCH, patch_body(type=APP_KEY))
    assert (with_app_key.status_code, without.status_code) == (202, 202)
    assert (refused.status_code, wrong.status_code, bad.status_code) == (404, 403, 400)
    assert APP_KEY not in caplog.text
    assert KEY not in caplog.text


# --- methods, encodings, Redis down ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", PATCH, "PATCH"),
        ("POST", PATCH, "PATCH"),
        ("DELETE", PATCH, "PATCH"),
        ("POST", BY_VERSION, "PATCH"),
        ("POST", "/api/v2/dora/deployment/deployment-0001", "DELETE"),
        ("PATCH", "/api/v2/dora/deployment/deployment-0001", "DELETE"),
        ("PUT", "/api/v2/dora/failure/incident-0001", "DELETE"),
        ("DELETE", "/api/v2/dora/failure", "POST"),
    ],
)
async def test_other_methods_are_405_in_json(
    serving: Serving, method: str, path: str, allow: str
) -> None:
    """Each path takes Datadog's method for it: 405 with Allow otherwise."""
    async with serving() as client:
        response = await send(client, method, path, patch_body())
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {"errors": ["Method Not Allowed"]}


async def test_compressed_patch_is_refused(serving: Serving) -> None:
    """The guards of the POSTs hold: a gzip body is 415, a body past the limit 413."""
    async with serving() as client:
        gzipped = await send(client, "PATCH", PATCH, patch_body(), Content_Encoding="gzip")
        large = await send(client, "PATCH", PATCH, b" " * (LIMIT_BYTES + 1) + patch_body())
    assert gzipped.status_code == 415
    assert large.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", PATCH, patch_body()),
        ("DELETE", "/api/v2/dora/deployment/deployment-0001", b""),
        ("DELETE", "/api/v2/dora/failure/incident-00000001", b""),
    ],
)
async def test_redis_down_is_503_with_retry_after(
    serving: Serving, method: str, path: str, body: bytes
) -> None:
    """Nothing is acknowledged that Redis did not take: 503 with Retry-After, as for POSTs."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    async with serving(redis_url=f"redis://127.0.0.1:{closed}/0") as client:
        response = await send(client, method, path, body)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"errors": ["Service Unavailable"]}
