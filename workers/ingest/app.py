"""The ingest endpoint: Datadog's DORA write API, in front of the forwarder's Redis stream.

A producer that speaks Datadog's API (curl, datadog-ci, the official clients) changes only
its base URL. Each request goes: route -> ``DD-API-KEY`` -> size (``Content-Length``, then
the bytes as they arrive, within ``FORWARDER_INGEST_BODY_TIMEOUT_S``) -> JSON, envelope and
the producers' models (and the id its path names) -> one ``XADD`` that Redis acknowledges
-> 202 with the event's id (a POST) or ``{"data": null}`` (a PATCH or a DELETE). Datadog
wants an application key on a PATCH or a DELETE: a ``DD-APPLICATION-KEY`` header is taken
and ignored (the workers send theirs); only the ingest key is checked.
Nothing is acknowledged that is not stored: when Redis does not answer in time the caller
gets a 503 and retries (a retry of a write that did land is harmless: the same id folds into
the same state). Refused keys are logged through a ``RefusalLog`` (one line per reason per
interval, with a count); the header deadline and the connection cap are the server's
(``workers.ingest.guard``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from config import Settings
from forwarder import PublishError
from forwarder.connection import async_redis_client
from forwarder.jsontext import printable
from forwarder.protocol import (
    KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_DELETE,
    KIND_DEPLOYMENT_PATCH,
    KIND_DEPLOYMENT_PATCH_BY_VERSION,
    KIND_FAILURE,
    KIND_FAILURE_DELETE,
    PATCH_BY_VERSION_VARIABLE,
    RedisKeys,
)
from forwarder.replicas import Replicas
from workers.ingest.acknowledged import enqueue
from workers.ingest.answers import UNREPLICATED, error_answer, json_answer, unavailable
from workers.ingest.jsonapi import ApiError, bad_request
from workers.ingest.keys import IngestKeys
from workers.ingest.refusals import RefusalLog
from workers.ingest.request import BadRequestError, parse_request
from workers.ingest.sources.endpoints import Sources
from workers.ingest.sources.mapping_file import SourcesMapping

log = logging.getLogger("dora_forwarder.ingest")

JSONAPI_TYPE: Final = "application/vnd.api+json"
"""What Datadog answers a 202 with."""
API_KEY_HEADER: Final = "dd-api-key"
HEALTH_PATH: Final = "/health"
MAX_PATH_SHOWN: Final = 200
"""Characters of a request's path a log line shows (an id in it can be anything sent)."""
PATCH_BY_VERSION_OFF: Final = (
    "PATCH /api/v2/dora/deployments (a deployment named by service, env and version) is a "
    "Datadog preview, off on this forwarder: its operator turns it on with "
    f"{PATCH_BY_VERSION_VARIABLE}=true. Or name the deployment by id: "
    "PATCH /api/v2/dora/deployments/{deployment_id}"
)


@dataclass(frozen=True, slots=True)
class EventRoute:
    """A write path (a ``{parameter}`` in it names the event acted on): its method, the kind
    of entry it enqueues, the ``type`` a 202 names (None: Datadog's ``{"data": null}``)."""

    method: str
    path: str
    kind: str
    response_type: str | None = None


ROUTES: Final = (
    EventRoute("POST", "/api/v2/dora/failure", KIND_FAILURE, "dora_failure"),
    # Deprecated by Datadog for /failure; same body, and it answers dora_failure too.
    EventRoute("POST", "/api/v2/dora/incident", KIND_FAILURE, "dora_failure"),
    EventRoute("POST", "/api/v2/dora/deployment", KIND_DEPLOYMENT, "dora_deployment"),
    # Datadog's paths are not symmetric: PATCH on the plural, DELETE on the singular.
    EventRoute("PATCH", "/api/v2/dora/deployments/{deployment_id}", KIND_DEPLOYMENT_PATCH),
    EventRoute("PATCH", "/api/v2/dora/deployments", KIND_DEPLOYMENT_PATCH_BY_VERSION),
    EventRoute("DELETE", "/api/v2/dora/deployment/{deployment_id}", KIND_DEPLOYMENT_DELETE),
    EventRoute("DELETE", "/api/v2/dora/failure/{failure_id}", KIND_FAILURE_DELETE),
)

RedisFactory = Callable[[], aioredis.Redis]


class _TooLargeError(Exception):
    """The body is past the limit; nothing more of it is read."""


def redis_factory(settings: Settings) -> RedisFactory:
    """Clients that give up after ``publish_timeout_s`` (connect, and each reply).

    One immediate reconnect on a broken connection (e.g. a pooled one after Redis restarted);
    a timeout is not retried, so a caller waits at most about twice the timeout.
    """

    def build() -> aioredis.Redis:
        return async_redis_client(
            settings.redis_url,
            sentinel_master=settings.redis_sentinel_master,
            socket_timeout=settings.publish_timeout_s,
            socket_connect_timeout=settings.publish_timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )

    return build


async def _read_body(request: Request, limit_bytes: int) -> bytes:
    """The body, or ``_TooLargeError`` as soon as it is known to exceed ``limit_bytes``.

    A declared ``Content-Length`` past the limit is refused before reading anything; a
    chunked body is counted as it arrives, and never more than the limit is kept.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise _TooLargeError
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit_bytes:
            raise _TooLargeError
        body += chunk
    return bytes(body)


class Ingest:
    """The endpoint's state: settings, accepted keys, the Redis client (set by the lifespan).

    ``refusals`` counts refused requests; the server's guard (``guard``) shares it.
    """

    def __init__(self, settings: Settings, keys: IngestKeys, factory: RedisFactory) -> None:
        self.settings = settings
        self.keys = keys
        self.stream = RedisKeys(settings.key_prefix).ingest
        self.replicas = Replicas.of(settings.publish_replicas, settings.publish_replicas_timeout_s)
        self.factory = factory
        self.redis: aioredis.Redis | None = None
        self.refusals = RefusalLog(log, settings.ingest_refusal_log_interval_s)

    def redis_client(self) -> aioredis.Redis:
        """The client the lifespan made (a ``RuntimeError`` outside it: a bug)."""
        if self.redis is None:
            raise RuntimeError("the app's lifespan makes its Redis client: run the app with it")
        return self.redis

    def _refusal(self, request: Request) -> str | None:
        """Why the request's ``DD-API-KEY`` is refused, or None when it is accepted."""
        presented = request.headers.getlist(API_KEY_HEADER)
        if not presented:
            return "no DD-API-KEY header"
        if len(presented) > 1:
            return "more than one DD-API-KEY header"
        # Starlette decodes headers as latin-1: this gives back the bytes that were sent.
        raw = presented[0].strip().encode("latin-1")
        if self.keys.accepts(raw):
            return None
        if self.keys.is_datadog_key(raw):
            return "the Datadog API key itself (producers must use an ingest key)"
        return "a key that is not one of FORWARDER_INGEST_KEYS"

    async def read_body(self, request: Request, where: str) -> bytes | Response:
        """The request's body, or the answer that refuses it (encoding, size, time)."""
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            log.info("refused %s: Content-Encoding %s", where, encoding)
            return error_answer(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Unsupported Media Type: Content-Encoding {encoding} is not supported; "
                "send the body uncompressed",
            )
        limit = self.settings.ingest_max_body_bytes
        body_timeout_s = self.settings.ingest_body_timeout_s
        try:
            async with asyncio.timeout(body_timeout_s):
                return await _read_body(request, limit)
        except TimeoutError:
            log.info("refused %s: body not complete within %g s", where, body_timeout_s)
            return error_answer(
                HTTPStatus.REQUEST_TIMEOUT,
                f"Request Timeout: the body did not arrive within {body_timeout_s:g} s "
                "(FORWARDER_INGEST_BODY_TIMEOUT_S)",
                Connection="close",  # the rest of the body is not read: the connection ends
            )
        except ClientDisconnect:  # no one is left to answer; not a server error
            log.info("dropped %s: the client closed the connection before its body ended", where)
            return error_answer(HTTPStatus.BAD_REQUEST)
        except _TooLargeError:
            log.info("refused %s: body larger than %d bytes", where, limit)
            return error_answer(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"Payload Too Large: the body exceeds {limit} bytes",
            )

    async def handle(self, request: Request, route: EventRoute) -> Response:
        """One write request, answered as Datadog would (see the module's docstring)."""
        where = f"{request.method} {_shown_path(request)} from {_client(request)}"
        if (refusal := self._refusal(request)) is not None:
            self.refusals.refused(refusal, where)
            return error_answer(HTTPStatus.FORBIDDEN)
        if route.kind == KIND_DEPLOYMENT_PATCH_BY_VERSION and not self.settings.patch_by_version:
            log.info("rejected %s: HTTP 400 %s is off", where, PATCH_BY_VERSION_VARIABLE)
            return json_answer(
                HTTPStatus.BAD_REQUEST, bad_request([ApiError(PATCH_BY_VERSION_OFF, None)])
            )
        # Read whatever the method: a DELETE's body is ignored, but bounded like any other.
        body = await self.read_body(request, where)
        if isinstance(body, Response):
            return body
        try:
            event = parse_request(route.kind, body, request.path_params)
        except BadRequestError as exc:
            log.info("rejected %s: HTTP 400 %s", where, exc)
            return json_answer(HTTPStatus.BAD_REQUEST, bad_request(exc.errors))
        try:
            await enqueue(self.redis_client(), self.stream, [event], self.replicas)
        except (RedisError, PublishError) as exc:
            return self.not_stored(where, exc)
        data = None
        if route.response_type is not None:
            data = {"id": event.event_id, "type": route.response_type}
        return JSONResponse(
            {"data": data}, status_code=HTTPStatus.ACCEPTED, media_type=JSONAPI_TYPE
        )

    def not_stored(
        self, where: str, exc: RedisError | PublishError, redis_away: str | None = None
    ) -> Response:
        """503: Redis did not take the events (the body says ``redis_away``, else Datadog's
        phrase), or stored them but too few replicas acknowledged them (said in the body;
        logged once per interval). A retry is harmless either way."""
        if isinstance(exc, RedisError):
            log.warning("answered 503 to %s: Redis did not take the events: %s", where, exc)
            return unavailable(redis_away)
        self.refusals.refused(UNREPLICATED, where)
        return unavailable(f"{HTTPStatus.SERVICE_UNAVAILABLE.phrase}: {exc}")

    async def health(self, _request: Request) -> Response:
        """200 while Redis answers PING within the timeout, else 503 (for load balancers)."""
        try:
            await self.redis_client().ping()
        except RedisError as exc:
            log.warning("health: Redis does not answer: %s", exc)
            return unavailable()
        return json_answer(HTTPStatus.OK, {"status": "ok"})


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _shown_path(request: Request) -> str:
    """The path, safe to log: an id in it is whatever the client sent (escapes, megabytes)."""
    path = request.url.path
    cut = path[:MAX_PATH_SHOWN] + ("..." if len(path) > MAX_PATH_SHOWN else "")
    return printable(cut)


def _endpoint(ingest: Ingest, route: EventRoute) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await ingest.handle(request, route)

    return endpoint


async def _http_error(_request: Request, exc: Exception) -> Response:
    """404 and 405 (with its ``Allow``) in Datadog's JSON style rather than plain text."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    return error_answer(HTTPStatus(exc.status_code), None, **(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("failed %s %s", request.method, request.url.path, exc_info=exc)
    return error_answer(HTTPStatus.INTERNAL_SERVER_ERROR)


def create_app(
    settings: Settings,
    keys: IngestKeys,
    factory: RedisFactory | None = None,
    mapping: SourcesMapping | None = None,
) -> Starlette:
    """The ASGI app of the ingest endpoint and the webhook sources the settings turn on;
    ``factory`` builds its Redis client (a seam); ``mapping`` is the sources' (defaults)."""
    ingest = Ingest(settings, keys, factory or redis_factory(settings))
    sources = Sources(ingest, settings, mapping or SourcesMapping())

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Built here, in the server's event loop, and closed with it.
        ingest.redis = ingest.factory()
        try:
            yield
        finally:
            ingest.refusals.flush()  # the counts held back are written before the server ends
            client, ingest.redis = ingest.redis, None
            if client is not None:
                await client.aclose()

    routes = [Route(r.path, _endpoint(ingest, r), methods=[r.method]) for r in ROUTES]
    routes.append(Route(HEALTH_PATH, ingest.health, methods=["GET"]))
    routes.extend(sources.routes())
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    # Datadog has no /api/v2/dora/failure/: a 404, not a redirect a client may not follow.
    app.router.redirect_slashes = False
    app.state.ingest = ingest
    return app
