"""The sources' endpoints of ``serve``: ``POST /sources/<source>``, each off until configured.

A delivery goes: is the source on -> its proof (a Bearer ingest key, a token, or an HMAC
of the raw body) -> body (the ingest endpoint's limits) -> JSON -> the source's pure
mapping -> one ``XADD`` per event, in one transaction -> 202 listing what was accepted,
and what was ignored or refused, by id and reason. Nothing is acknowledged that is not
stored: when Redis does not answer the source gets a 503 and re-sends, which costs nothing
(ids come from the source's own ids; an unchanged state sends no request).

Answers: 401 when the proof is missing, 403 when it is wrong (logged through the ingest
endpoint's ``RefusalLog``, never with what was sent); 415 for a body that is not JSON
(GitHub's form encoding); 400 naming the member that cannot be mapped; 200 when everything
the delivery held is deliberately ignored; 404 with what to set when the source is off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, cast

from pydantic import SecretStr
from redis.exceptions import RedisError, WatchError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from forwarder import PublishError, jsontext
from forwarder.entry import Event, encode_entry
from forwarder.jsontext import printable
from forwarder.protocol import RedisKeys
from workers.ingest.acknowledged import confirm, enqueue
from workers.ingest.answers import error_answer
from workers.ingest.jsonapi import ApiError, bad_request
from workers.ingest.sources import alertmanager, github, gitlab, pagerduty
from workers.ingest.sources.document import UnmappableError
from workers.ingest.sources.mapped import Ignored, Mapped
from workers.ingest.sources.mapping_file import SourcesMapping
from workers.ingest.sources.signatures import (
    Refusal,
    github_refusal,
    pagerduty_refusal,
    token_refusal,
)

if TYPE_CHECKING:
    from config import Settings
    from workers.ingest.app import Ingest

log = logging.getLogger("dora_forwarder.sources")

SOURCES_PATH: Final = "/sources/{source}"
GITLAB_STATUS_KEEP_S: Final = 7 * 86_400
"""How long a GitLab deployment's ``running`` (or ``success``) is kept for its other half."""
GITLAB_JOIN_ATTEMPTS: Final = 5
"""Tries of a GitLab status's transaction while other deliveries of the deployment change
what is known (GitLab sends a handful of statuses per deployment)."""
REDIS_AWAY: Final = (
    f"{HTTPStatus.SERVICE_UNAVAILABLE.phrase}: the forwarder's Redis did not answer; "
    "send again (a repeat costs nothing)"
)
"""A source's 503 says more than Datadog's bare phrase: its sender is no Datadog client."""
MAX_ITEM_LINES: Final = 5
"""WARNING lines one delivery writes for its refused items; the rest are counted in one."""
_JSON_TYPES: Final = frozenset({"application/json", "text/json", "text/plain"})
"""What a JSON body may be labelled (plus any ``+json`` type); a missing type is taken too."""


ProofCheck = Callable[[Request, bytes], Refusal | None]
"""Why a delivery's proof (its headers, its raw body) is refused, or None."""
HmacCheck = Callable[[bytes, bytes, str | None], Refusal | None]
"""Why a signature (the header's value) is not the body's under the key, or None."""


def _bearer_refusal(ingest: Ingest, request: Request) -> Refusal | None:
    """Alertmanager's ``Authorization: Bearer <ingest key>`` (``http_config.authorization``)."""
    presented = request.headers.getlist("authorization")
    if not presented:
        return Refusal("no Authorization header (http_config.authorization in Alertmanager)", True)
    if len(presented) > 1:
        return Refusal("more than one Authorization header")
    scheme, _, credentials = presented[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return Refusal("an Authorization header that is not Bearer <ingest key>")
    if ingest.keys.accepts(credentials.strip().encode("latin-1")):
        return None
    return Refusal("a Bearer key that is not one of FORWARDER_INGEST_KEYS")


@dataclass(frozen=True, slots=True)
class Source:
    """One source that is on: its name (the path's last part) and the check of its proof.

    ``checked_before_body``: the proof is a header alone (refused before reading a byte).
    ``challenge``: what a 401's ``WWW-Authenticate`` names (RFC 9110 wants one): Bearer, or
    the header the system signs in, as no registered scheme fits a webhook signature.
    """

    name: str
    refusal: ProofCheck
    checked_before_body: bool
    challenge: str


class Sources:
    """The sources ``settings`` turn on, mapping as ``mapping`` says, into ``ingest``'s Redis."""

    def __init__(self, ingest: Ingest, settings: Settings, mapping: SourcesMapping) -> None:
        self.ingest = ingest
        self.mapping = mapping
        self.gitlab_prefix = RedisKeys(settings.key_prefix).gitlab_prefix
        self.on = {source.name: source for source in _sources(ingest, settings)}

    def routes(self) -> list[Route]:
        """One route for every source, on or off (an off one says what turns it on)."""
        return [Route(SOURCES_PATH, self.handle, methods=["POST"])]

    def _refused(self, refusal: Refusal, source: Source, where: str) -> Response:
        self.ingest.refusals.refused(f"{source.name}: {refusal.reason}", where)
        if refusal.missing:
            return error_answer(
                HTTPStatus.UNAUTHORIZED,
                f"Unauthorized: {refusal.reason}",
                **{"WWW-Authenticate": source.challenge},
            )
        return error_answer(HTTPStatus.FORBIDDEN, "Forbidden")

    async def handle(self, request: Request) -> Response:
        """One delivery of a source's webhook (see the module's docstring)."""
        name = request.path_params["source"]
        client = request.client.host if request.client else "unknown"
        where = f"POST /sources/{printable(name[:40])} from {client}"
        source = self.on.get(name)
        if source is None:
            return error_answer(HTTPStatus.NOT_FOUND, _off_reason(name))
        body = await self._proven_body(source, request, where)
        if isinstance(body, Response):
            return body
        try:
            mapped = await self._mapped(source.name, request, jsontext.parse(body))
        except jsontext.JsonTextError as exc:
            return self._bad(where, [ApiError(f"the body is not valid JSON: {exc}", "")])
        except UnmappableError as exc:
            return self._bad(where, [exc.error])
        except (RedisError, PublishError) as exc:  # GitLab's statuses are kept in Redis
            return self.ingest.not_stored(where, exc, REDIS_AWAY)
        return await self._answer(mapped, where)

    async def _proven_body(self, source: Source, request: Request, where: str) -> bytes | Response:
        """The body, once the source's proof is checked; or the answer that refuses it."""
        if source.checked_before_body and (refusal := source.refusal(request, b"")):
            return self._refused(refusal, source, where)
        body = await self.ingest.read_body(request, where)
        if isinstance(body, Response):
            return body
        if not source.checked_before_body and (refusal := source.refusal(request, body)):
            return self._refused(refusal, source, where)
        content_type = request.headers.get("content-type", "application/json")
        media_type = content_type.split(";")[0].strip().lower()
        if media_type not in _JSON_TYPES and not media_type.endswith("+json"):
            log.info("refused %s: Content-Type %s", where, printable(content_type[:80]))
            return error_answer(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type: send application/json (in GitHub, the webhook's "
                "Content type setting)",
            )
        return body

    async def _answer(self, mapped: Mapped, where: str) -> Response:
        """Enqueue what a delivery maps to, and say what was accepted, ignored, refused."""
        if mapped.refused and not mapped.events:
            return self._bad(where, mapped.refused)
        for error in mapped.refused[:MAX_ITEM_LINES]:
            log.warning("%s: refused one item, its neighbours kept: %s", where, error.detail)
        if len(mapped.refused) > MAX_ITEM_LINES:
            more = len(mapped.refused) - MAX_ITEM_LINES
            log.warning("%s: refused %d more item(s) (the answer lists them all)", where, more)
        for item in mapped.ignored:
            if item.loud:
                log.warning("%s: %s: %s", where, item.what, item.reason)
        if mapped.events and not mapped.enqueued:
            try:
                await self._enqueue(mapped.events)
            except (RedisError, PublishError) as exc:
                return self.ingest.not_stored(where, exc, REDIS_AWAY)
        status = HTTPStatus.ACCEPTED if mapped.events or mapped.held else HTTPStatus.OK
        return JSONResponse(mapped.answer(), status_code=status)

    def _bad(self, where: str, errors: list[ApiError]) -> Response:
        log.info("rejected %s: HTTP 400 %s", where, "; ".join(e.detail for e in errors)[:500])
        return JSONResponse(bad_request(errors), status_code=HTTPStatus.BAD_REQUEST)

    async def _mapped(self, name: str, request: Request, document: Any) -> Mapped:
        mapping = self.mapping
        if name == "alertmanager":
            return alertmanager.map_notification(document, mapping.alertmanager)
        if name == "pagerduty":
            return pagerduty.map_webhook(document, mapping.pagerduty)
        if name == "github":
            event_name = request.headers.get("x-github-event", "")
            return github.map_event(event_name, document, mapping.github)
        status = gitlab.read_status(
            request.headers.get("x-gitlab-event", ""), document, mapping.gitlab
        )
        if isinstance(status, Mapped):
            return status
        return await self._gitlab_deployment(status)

    async def _gitlab_deployment(self, status: gitlab.DeploymentStatus) -> Mapped:
        """Record this status of the deployment; once its success is known, enqueue the
        deployment in the same transaction.

        The first report of each status is kept (a re-delivery changes nothing). Reading what
        is known, recording this status and the XADD are one optimistic transaction (WATCH):
        when another delivery of the deployment records a status in between, it is done again.
        So the entry enqueued last is built from everything known: a ``success`` and its
        ``running`` handled at once cannot leave the start-less fallback last in the stream,
        where the workers (the last writer wins) would keep it.
        """
        # Checked now, as if it were done: a running that could never become a deployment
        # (a project name past the limit) is a 400 now, not at its success.
        gitlab.deployment(status, None, status.at_ns)
        key = self.gitlab_prefix + status.deployment_key
        async with self.ingest.redis_client().pipeline(transaction=True) as pipe:
            for attempt in range(GITLAB_JOIN_ATTEMPTS):
                await pipe.watch(key)
                # In WATCH mode the pipeline answers at once; the client gives bytes.
                known = cast("dict[bytes, bytes]", await pipe.hgetall(key))
                times = {field.decode(): int(value) for field, value in known.items()}
                times.setdefault(status.status, status.at_ns)
                event = None
                if gitlab.SUCCESS in times:
                    event = gitlab.deployment(
                        status, times.get(gitlab.RUNNING), times[gitlab.SUCCESS]
                    )
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hsetnx(key, status.status, status.at_ns)
                pipe.expire(key, GITLAB_STATUS_KEEP_S)
                if event is not None:
                    pipe.xadd(self.ingest.stream, encode_entry(event))
                try:
                    await pipe.execute()
                except WatchError:
                    if attempt + 1 == GITLAB_JOIN_ATTEMPTS:
                        raise  # a RedisError: 503, and GitLab's hook log shows it
                    continue
                break
        await confirm(self.ingest.redis_client(), key, GITLAB_STATUS_KEEP_S, self.ingest.replicas)
        if event is None:
            what = f"GitLab deployment {status.deployment_key}"
            reason = f"its start is kept; it is sent when GitLab reports its {gitlab.SUCCESS}"
            return Mapped(held=[Ignored(what, reason)])
        return Mapped(events=[event], enqueued=True)

    async def _enqueue(self, events: list[Event]) -> None:
        """Every event of a delivery, or none: one transaction of XADDs (then ``WAIT``)."""
        await enqueue(self.ingest.redis_client(), self.ingest.stream, events, self.ingest.replicas)


def _signed(check: HmacCheck, secret: SecretStr, header: str) -> ProofCheck:
    """The proof of a source that signs the body with ``secret`` in ``header``."""
    # The HMAC key is the secret's bytes as the system has them (UTF-8, any text).
    key = secret.get_secret_value().encode("utf-8", "surrogateescape")
    return lambda request, body: check(key, body, request.headers.get(header))


def _sources(ingest: Ingest, settings: Settings) -> list[Source]:
    """The sources the settings turn on, each with the check of its proof."""
    on = []
    if settings.alertmanager_source:
        bearer = partial(_bearer_refusal, ingest)
        on.append(Source("alertmanager", lambda request, _: bearer(request), True, "Bearer"))
    signed: list[tuple[str, SecretStr | None, HmacCheck, str]] = [
        (
            "pagerduty",
            settings.pagerduty_webhook_secret,
            pagerduty_refusal,
            "X-PagerDuty-Signature",
        ),
        ("github", settings.github_webhook_secret, github_refusal, "X-Hub-Signature-256"),
    ]
    for name, secret, check, header in signed:
        if secret is not None:
            on.append(Source(name, _signed(check, secret, header), False, header))
    if (token := settings.gitlab_webhook_token) is not None:
        expected = token.get_secret_value().encode()
        on.append(
            Source(
                "gitlab",
                lambda request, _: token_refusal(expected, request.headers.get("x-gitlab-token")),
                True,
                "X-Gitlab-Token",
            )
        )
    return on


TURNED_ON_BY: Final = {
    "alertmanager": "FORWARDER_ALERTMANAGER_SOURCE=true",
    "pagerduty": "FORWARDER_PAGERDUTY_WEBHOOK_SECRET",
    "github": "FORWARDER_GITHUB_WEBHOOK_SECRET",
    "gitlab": "FORWARDER_GITLAB_WEBHOOK_TOKEN",
}
"""The setting that turns each source on."""


def _off_reason(name: str) -> str:
    if name in TURNED_ON_BY:
        return f"Not Found: the {name} source is off on this forwarder: set {TURNED_ON_BY[name]}"
    return f"Not Found: the sources are {', '.join(TURNED_ON_BY)}"


def enabled_sources(settings: Settings) -> tuple[str, ...]:
    """The names of the sources ``settings`` turn on (``serve``'s first log line says them)."""
    flags = {
        "alertmanager": settings.alertmanager_source,
        "pagerduty": settings.pagerduty_webhook_secret is not None,
        "github": settings.github_webhook_secret is not None,
        "gitlab": settings.gitlab_webhook_token is not None,
    }
    return tuple(name for name, on in flags.items() if on)
