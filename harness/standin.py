"""A local stand-in for Datadog's DORA Metrics API, for integration tests and benchmarks.

It validates, records and applies Datadog's DORA write operations as Datadog does
(/work/shared/reference/DORA-API.md): `POST /api/v2/dora/{failure,incident,deployment}`
(API key), `PATCH /api/v2/dora/deployments/{id}`, the preview `PATCH /api/v2/dora/deployments`
(by version) and `DELETE /api/v2/dora/{deployment,failure}/{id}` (API and application keys).
Tests can inject latency, forced statuses, dropped connections, calendar-aligned rate limits
and requests applied late (after the client gave up), on any of them. Run in-process with
`StandinServer`, or as `python -m harness.standin --port 0 --api-key KEY [--app-key KEY]
[--latency-ms 50] [--rate-limit 100/10]`. Both modes serve `GET /_standin/state`,
`GET /_standin/requests`, `POST /_standin/behaviour` and `POST /_standin/reset`, and
Datadog's key check `GET /api/v1/validate` (200 `{"valid": true}` for its API keys, else 403).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.client import responses as reason_phrases
from pathlib import Path
from typing import Any, Final, Self, TypeVar

from aiohttp import web
from multidict import CIMultiDict

from harness.standin_bodies import (
    Bodies,
    Invalid,
    Selector,
    attributes_of,
    bad_request,
    nanoseconds,
    parse,
)

DEFAULT_API_KEY = "standin-api-key"
DEFAULT_APP_KEY = "standin-app-key"
KIND_OF_PATH = {
    "/api/v2/dora/failure": "dora_failure",
    "/api/v2/dora/incident": "dora_failure",  # legacy path, same schema and response type
    "/api/v2/dora/deployment": "dora_deployment",
}
"""The POST paths and the kind of event each creates."""
KINDS: Final = ("dora_failure", "dora_deployment")
JSONAPI_TYPE = "application/vnd.api+json"
Headers = Mapping[str, str] | None
_RATE_HEADERS = [f"X-RateLimit-{h}" for h in ("Limit", "Period", "Remaining", "Reset", "Name")]
_ACCEPTED = (200, 202)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Route:
    """One DORA write operation the stand-in serves."""

    method: str
    path: str  # an aiohttp pattern; `{event_id}` is the id the operation acts on
    operation: str  # "post", "patch", "patch_by_version" or "delete"
    kind: str  # the events it writes: "dora_failure" or "dora_deployment"
    limit_name: str  # its rate limit's X-RateLimit-Name (Datadog's own names are unknown)

    @property
    def needs_app_key(self) -> bool:
        """Datadog's PATCH and DELETE need DD-APPLICATION-KEY too; the POSTs only DD-API-KEY."""
        return self.operation != "post"


ROUTES: Final = (
    *(Route("POST", path, "post", kind, kind) for path, kind in KIND_OF_PATH.items()),
    Route(
        "PATCH",
        "/api/v2/dora/deployments/{event_id}",
        "patch",
        "dora_deployment",
        "dora_deployment_patch",
    ),
    Route(
        "PATCH",
        "/api/v2/dora/deployments",
        "patch_by_version",
        "dora_deployment",
        "dora_deployment_patch",
    ),
    Route(
        "DELETE",
        "/api/v2/dora/deployment/{event_id}",
        "delete",
        "dora_deployment",
        "dora_deployment_delete",
    ),
    Route(
        "DELETE", "/api/v2/dora/failure/{event_id}", "delete", "dora_failure", "dora_failure_delete"
    ),
)
RATE_LIMIT_NAMES: Final = tuple(dict.fromkeys(route.limit_name for route in ROUTES))


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request to a DORA write endpoint; `status` is 0 when its connection was dropped."""

    path: str
    status: int
    attributes: dict[str, Any] | None  # the body's data.attributes; None for a DELETE
    headers: dict[str, str]
    received_at: float  # time.monotonic() on arrival, before any injected latency
    received_wall: float = 0.0  # wall_clock() on arrival: places it in a rate-limit window
    method: str = "POST"
    # The id of the event it acts on: a POST's id (the one the stand-in gave it when it had
    # none), the id in a PATCH's or DELETE's path, the deployment a PATCH by version updated.
    # None when unknown: a POST without a string id it did not accept, a PATCH by version it
    # did not apply.
    event_id: str | None = None
    kind: str = "dora_failure"  # the kind of event it acts on, or "dora_deployment"


@dataclass(frozen=True, slots=True)
class _Canned:
    status: int  # 0: drop the connection
    headers: Headers = None
    body: Any = None

    def response(self) -> web.Response:
        body, phrase = self.body, reason_phrases.get(self.status, "Error")
        if body is None:
            body = bad_request(phrase, "") if self.status == 400 else {"errors": [phrase]}
        if isinstance(body, str):  # e.g. an HTML 429 page, as datadogpy once received
            payload, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(body).encode(), "application/json"
        headers = CIMultiDict({"Content-Type": content_type})
        headers.update(self.headers or {})
        return web.Response(status=self.status, body=payload, headers=headers)


_DROP = _Canned(0)


@dataclass(frozen=True, slots=True)
class _Write:
    """A valid write, to apply (under the lock) once the stand-in decides to accept it."""

    event_id: str | None  # None: a PATCH by version, whose deployment is found when applied
    attributes: dict[str, Any]  # a POST's event; the fields a PATCH sets; {} for a DELETE
    selector: Selector | None = None


@dataclass(slots=True)
class _RateLimit:
    limit: int
    period_s: int
    name: str
    duplicate_reset_header: bool
    window: int = -1
    used: int = 0

    def admit(self, now: float, consume: bool) -> tuple[bool, CIMultiDict[str]]:
        """Count a request (if `consume`) in the window of `now`; also return the headers."""
        window = int(now // self.period_s)
        if window != self.window:
            self.window, self.used = window, 0
        admitted = not consume or self.used < self.limit
        if consume and admitted:
            self.used += 1
        reset = max(1, math.ceil((window + 1) * self.period_s - now))
        values = (self.limit, self.period_s, max(0, self.limit - self.used), reset, self.name)
        headers = CIMultiDict(zip(_RATE_HEADERS, map(str, values), strict=True))
        if self.duplicate_reset_header:
            headers.add("X-RateLimit-Reset", str(reset))
        return admitted, headers


def _json(status: int, body: Any, content_type: str = "application/json") -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=content_type)


def _accepted(status: int, body: Any) -> web.Response:
    return _json(status, body, JSONAPI_TYPE)


def _not_found() -> web.Response:
    return _json(404, {"errors": ["Not Found"]})


def _keyed(request: RecordedRequest) -> tuple[str, str] | None:
    """(kind, id) of an accepted request that names its event, else None."""
    if request.status not in _ACCEPTED or request.event_id is None:
        return None
    return request.kind, request.event_id


def _resurrections(requests: Iterable[RecordedRequest]) -> list[str]:
    deleted: set[tuple[str, str]] = set()
    resurrected: list[str] = []
    for request in requests:
        if (key := _keyed(request)) is None:
            continue
        if request.method == "DELETE":
            deleted.add(key)
        elif request.method == "POST" and key in deleted:
            deleted.discard(key)
            resurrected.append(key[1])
    return resurrected


class DoraStandin:
    """The stand-in's behaviours and records; `make_app()` serves them. Thread-safe.

    `app_key` is the DD-APPLICATION-KEY that PATCH and DELETE need (with an accepted API key).
    `latency_s` delays every answer from a DORA endpoint (the control endpoints never wait).
    `wall_clock` places rate-limit windows; tests pin it to make windows deterministic.
    `request_log_size` bounds `requests()` (each record costs ~2.5 kB) for long benchmarks;
    `regressions()` and `resurrections()` see only the requests still in the log.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        app_key: str = DEFAULT_APP_KEY,
        extra_api_keys: Iterable[str] = (),
        openapi_path: str | Path | None = None,
        wall_clock: Callable[[], float] = time.time,
        request_log_size: int | None = None,
    ) -> None:
        self.api_key, self.api_keys = api_key, frozenset([api_key, *extra_api_keys])
        self.app_key = app_key
        self._bodies = Bodies(openapi_path)
        self._wall_clock = wall_clock
        self._request_log_size = request_log_size
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.latency_s = 0.0
        self._forced: deque[_Canned] = deque()
        self._late: deque[float] = deque()
        self._held = 0
        self._applied_late = 0
        self._always: _Canned | None = None
        self._limits: dict[str, _RateLimit] = {}
        self._requests: deque[RecordedRequest] = deque(maxlen=self._request_log_size)
        self._latest: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self._deleted: dict[str, set[str]] = {k: set() for k in KINDS}
        self._counts: Counter[int] = Counter()
        self._methods: Counter[str] = Counter()
        self._throttled: dict[str, Counter[int]] = {k: Counter() for k in RATE_LIMIT_NAMES}

    def respond_next(
        self, status: int, count: int = 1, headers: Headers = None, body: Any = None
    ) -> None:
        """Answer the next `count` DORA write requests (any route) with `status`, whatever
        they contain.

        They skip auth and rate limiting and are never applied. `body` (JSON-able, or a str
        sent as text/plain) defaults to Datadog's error body for that status. Calls queue up,
        in order, behind earlier `respond_next` and `drop_next` ones.
        """
        with self._lock:
            self._forced.extend([_Canned(status, headers, body)] * count)

    def respond_always(self, status: int | None, headers: Headers = None, body: Any = None) -> None:
        """Answer every write request (an outage) like `respond_next`, until called with None.

        Queued `respond_next` and `drop_next` answers still come first.
        """
        with self._lock:
            self._always = None if status is None else _Canned(status, headers, body)

    def drop_next(self, count: int = 1) -> None:
        """Close the connections of the next `count` write requests without answering them.

        Drops and `respond_next` answers queue up together, in the order they were asked for.
        """
        with self._lock:
            self._forced.extend([_DROP] * count)

    def apply_late(self, count: int = 1, hold_s: float = 2.0) -> None:
        """Hold the next `count` write requests `hold_s` seconds, then answer and apply them.

        Applied as usual (validated, recorded, `latest` updated) even when the client gave
        up meanwhile: Datadog can apply a request whose sender saw only a timeout. The
        request is read in full before the hold, as a server that has it would.
        """
        with self._lock:
            self._late.extend([hold_s] * count)

    def late(self) -> tuple[int, int]:
        """(requests held now, requests applied after a hold so far)."""
        with self._lock:
            return self._held, self._applied_late

    def rate_limit(
        self,
        limit: int | None,
        period_s: int = 60,
        name: str = "dora_failure",
        duplicate_reset_header: bool = False,
    ) -> None:
        """Admit `limit` requests per calendar-aligned window of `period_s`, then answer 429.

        `name` is both the X-RateLimit-Name and the endpoints limited: "dora_failure" (POST
        /failure and /incident), "dora_deployment" (POST /deployment), "dora_deployment_patch"
        (both PATCHes), "dora_deployment_delete" or "dora_failure_delete". Every response
        from those endpoints carries X-RateLimit-* headers; `duplicate_reset_header` sends
        Reset twice, as Datadog sometimes does. `limit=None` lifts the limit.
        """
        if name not in RATE_LIMIT_NAMES:
            raise ValueError(f"name must be one of {sorted(RATE_LIMIT_NAMES)}, got {name!r}")
        with self._lock:
            self._limits.pop(name, None)
            if limit is not None:
                self._limits[name] = _RateLimit(limit, period_s, name, duplicate_reset_header)

    def preload(self, kind: str, event_id: str, attributes: Mapping[str, Any]) -> None:
        """Hold an event that Datadog has from elsewhere (another sender, its UI): PATCH and
        DELETE find it, though no request of it is recorded."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
        with self._lock:
            self._latest[kind][event_id] = dict(attributes)

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Apply behaviours sent as JSON: `latency_s`, `app_key`, or a behaviour method's name
        (or `preload`) mapped to its argument or to an object of its keyword arguments."""
        methods = {
            "respond_next",
            "respond_always",
            "drop_next",
            "rate_limit",
            "apply_late",
            "preload",
        }
        if unknown := set(settings) - methods - {"latency_s", "app_key"}:
            raise ValueError(f"unknown behaviour settings: {sorted(unknown)}")
        if "latency_s" in settings:
            self.latency_s = float(settings["latency_s"])
        if "app_key" in settings:
            self.app_key = str(settings["app_key"])
        for name in methods & set(settings):
            value = settings[name]
            if isinstance(value, dict):
                getattr(self, name)(**value)
            else:
                getattr(self, name)(value)

    def reset(self) -> None:
        """Forget all records and behaviours (the keys stay)."""
        with self._lock:
            self._clear()

    def requests(self) -> list[RecordedRequest]:
        """The DORA write requests so far (the last `request_log_size` of them), in the order
        they were answered, which is the order they were applied: a request held by
        `apply_late` comes after those answered during its hold (`received_at` tells when
        each arrived)."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, event_id: str, kind: str | None = None) -> list[RecordedRequest]:
        """`requests()` that act on `event_id` (of `kind`, when given), in the same order."""
        return [
            request
            for request in self.requests()
            if request.event_id == event_id and kind in (None, request.kind)
        ]

    def latest(self, kind: str = "dora_failure") -> dict[str, dict[str, Any]]:
        """id -> attributes of the event as the stand-in holds it now.

        A POST replaces the whole event (Datadog upserts by id), a PATCH sets its
        `change_failure` and `remediation` attributes, a DELETE removes it. Whether Datadog
        keeps a patch across a later POST of the same deployment is not documented; this
        is the strict choice (the POST wipes it), so tests see a POST that overtook a PATCH.
        """
        with self._lock:
            return dict(self._latest[kind])

    def deleted(self, kind: str = "dora_failure") -> set[str]:
        """Ids whose DELETE the stand-in applied, even those POSTed again since."""
        with self._lock:
            return set(self._deleted[kind])

    def status_counts(self) -> dict[int, int]:
        """How many DORA write requests got each status (0 = dropped)."""
        with self._lock:
            return dict(self._counts)

    def throttled_per_window(self, name: str = "dora_failure") -> dict[int, int]:
        """Rate-limit 429s of limit `name` by window index, floor(wall_clock() / period_s)."""
        with self._lock:
            return dict(self._throttled[name])

    def regressions(self) -> list[str]:
        """Ids of accepted POSTs that sent a start-only state after a finish for that id.

        A forwarder must never send one: Datadog would be left without the finish. PATCHes
        are no states; an accepted DELETE starts the id afresh.
        """
        finished: set[tuple[str, str]] = set()
        regressed: list[str] = []
        for request in self.requests():
            if (key := _keyed(request)) is None:
                continue
            if request.method == "DELETE":
                finished.discard(key)
            elif request.method == "POST" and request.attributes is not None:
                if "finished_at" in request.attributes:
                    finished.add(key)
                elif key in finished:
                    regressed.append(key[1])
        return regressed

    def resurrections(self) -> list[str]:
        """Ids of events POSTed again after their DELETE: once per accepted DELETE followed
        by an accepted POST of its id, in the order of `requests()`.

        The forwarder sends nothing of an id after its DELETE unless the id is published
        again, so outside such tests this should stay empty. It counts a POST held by
        `apply_late` that lands after the DELETE (Datadog would hold the event again),
        not a PATCH (it finds nothing to patch: 404). A PATCH or DELETE of an id whose
        POST this stand-in never saw is no finding: Datadog may have it from elsewhere.
        """
        return _resurrections(self.requests())

    def state(self, include_latest: bool = True) -> dict[str, Any]:
        """Records and behaviours as JSON; what `GET /_standin/state` answers."""
        resurrected = self.resurrections()
        with self._lock:
            return {
                "requests": self._counts.total(),
                "status_counts": {str(s): n for s, n in sorted(self._counts.items())},
                "requests_by_method": dict(sorted(self._methods.items())),
                "latest": {k: dict(v) for k, v in self._latest.items()} if include_latest else None,
                "deleted": {k: sorted(v) for k, v in self._deleted.items()},
                "resurrections": resurrected,
                "throttled_per_window": {k: dict(v) for k, v in self._throttled.items()},
                "latency_s": self.latency_s,
                "pending_forced": len(self._forced),
                "pending_late": len(self._late),
                "held": self._held,
                "applied_late": self._applied_late,
                "respond_always": self._always.status if self._always else None,
                "rate_limits": {k: [r.limit, r.period_s] for k, r in self._limits.items()},
                "accepted_ids": {k: len(v) for k, v in self._latest.items()},
            }

    def make_app(self) -> web.Application:
        """The aiohttp application serving the DORA and control endpoints."""
        app = web.Application()
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._handler(route))
        app.router.add_get("/api/v1/validate", self._handle_validate)
        app.router.add_get("/_standin/state", self._handle_state)
        app.router.add_get("/_standin/requests", self._handle_requests)
        app.router.add_post("/_standin/behaviour", self._handle_behaviour)
        app.router.add_post("/_standin/reset", self._handle_reset)
        return app

    def _handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await self._handle_write(route, request)

        return handle

    async def _handle_write(self, route: Route, request: web.Request) -> web.Response:
        received_at, received_wall = time.monotonic(), self._wall_clock()
        path_id = request.match_info.get("event_id")
        # Read first: a client that gives up during the latency or a hold closes the
        # connection, and what the server already has must still count.
        body = parse(await request.read())
        with self._lock:
            hold_s = self._late.popleft() if self._late else None
            self._held += hold_s is not None
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if hold_s is not None:
            await asyncio.sleep(hold_s)
        authorised = self._authorised(route, request)
        with self._lock:
            canned = self._forced.popleft() if self._forced else self._always
            admitted, limit_headers = True, None
            if limit := self._limits.get(route.limit_name):
                consume = canned is None and authorised
                admitted, limit_headers = limit.admit(self._wall_clock(), consume)
                if not admitted:
                    self._throttled[route.limit_name][limit.window] += 1

        if canned is _DROP and request.transport is not None:
            request.transport.close()  # aiohttp then skips writing the response
        answer = self._answer(route, body, path_id, canned, authorised, admitted)

        attributes = None if route.operation == "delete" else attributes_of(body)
        event_id = path_id
        if route.operation == "post" and isinstance(given := (attributes or {}).get("id"), str):
            event_id = given
        with self._lock:
            # Applied and recorded together: `requests()` is the order of application.
            if isinstance(answer, _Write):
                response, event_id = self._apply(route, answer)
            else:
                response = answer
            status = 0 if canned is _DROP else response.status
            self._requests.append(
                RecordedRequest(
                    request.path,
                    status,
                    attributes,
                    dict(request.headers),
                    received_at,
                    received_wall,
                    route.method,
                    event_id,
                    route.kind,
                )
            )
            self._counts[status] += 1
            self._methods[route.method] += 1
            if hold_s is not None:
                self._held -= 1
                self._applied_late += 1
        if limit_headers is not None:
            response.headers.extend(limit_headers)
        return response

    def _authorised(self, route: Route, request: web.Request) -> bool:
        if request.headers.get("DD-API-KEY") not in self.api_keys:
            return False
        return not route.needs_app_key or request.headers.get("DD-APPLICATION-KEY") == self.app_key

    def _answer(
        self,
        route: Route,
        body: Any,
        path_id: str | None,
        canned: _Canned | None,
        authorised: bool,
        admitted: bool,
    ) -> web.Response | _Write:
        """The response, or the valid write to apply (answered 202 or, not found, 404)."""
        if canned is _DROP:
            return web.Response()
        if canned is not None:
            return canned.response()
        if not authorised:
            return _json(403, {"errors": ["Forbidden"]})
        if not admitted:
            return _json(429, {"errors": ["Too many requests"]})
        try:
            return self._check(route, body, path_id)
        except Invalid as invalid:
            return _json(400, bad_request(*invalid.args))

    def _check(self, route: Route, body: Any, path_id: str | None) -> _Write:
        """The write a valid body asks for; raises `Invalid`."""
        if route.operation == "post":
            return _Write(self._bodies.event(route.kind, body), body["data"]["attributes"])
        if route.operation == "patch_by_version":
            selector, patched = self._bodies.patch_by_version(body)
            return _Write(None, patched, selector)
        assert path_id is not None  # the other routes have an {event_id}
        if route.operation == "patch":
            return _Write(path_id, self._bodies.patch(body, path_id))
        return _Write(path_id, {})  # a DELETE: Datadog ignores any body

    def _apply(self, route: Route, write: _Write) -> tuple[web.Response, str | None]:
        """Apply an accepted write (the lock held); return the answer and the event's id."""
        events = self._latest[route.kind]
        event_id = write.event_id
        if route.operation == "post":
            assert event_id is not None
            events[event_id] = write.attributes
            return _accepted(202, {"data": {"id": event_id, "type": route.kind}}), event_id
        if write.selector is not None:
            event_id = _most_recently_finished(events, write.selector)
        if event_id is None or event_id not in events:
            return _not_found(), event_id
        if route.operation == "delete":
            del events[event_id]
            self._deleted[route.kind].add(event_id)
        else:  # a copy: the recorded POST keeps the attributes it sent
            events[event_id] = {**events[event_id], **write.attributes}
        return _accepted(202, {"data": None}), event_id

    async def _handle_validate(self, request: web.Request) -> web.Response:
        # Datadog's key check, as documented: 200 {"valid": true}, else 403 with the
        # errors array of strings its 403s carry. Not a DORA write: not recorded.
        if request.headers.get("DD-API-KEY") in self.api_keys:
            return _json(200, {"valid": True})
        return _json(403, {"errors": ["Forbidden"]})

    async def _handle_state(self, request: web.Request) -> web.Response:
        return _json(200, self.state(include_latest=request.query.get("latest") != "0"))

    async def _handle_requests(self, request: web.Request) -> web.Response:
        # Compact, for benchmarks: received_at is time.monotonic(), the same clock in every
        # process of this machine, so a publisher can measure publish-to-receipt latency.
        rows = [
            {
                "id": r.event_id,
                "method": r.method,
                "path": r.path,
                "status": r.status,
                "received_at": r.received_at,
                "received_wall": r.received_wall,
            }
            for r in self.requests()
        ]
        return _json(200, rows)

    async def _handle_behaviour(self, request: web.Request) -> web.Response:
        try:
            self.configure(await request.json())
        except (ValueError, TypeError) as error:
            return _json(400, {"errors": [str(error)]})
        return _json(200, self.state(include_latest=False))

    async def _handle_reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return _json(200, self.state(include_latest=False))


def _most_recently_finished(
    deployments: Mapping[str, Mapping[str, Any]], selector: Selector
) -> str | None:
    """The deployment a PATCH by version updates: of those `selector` names, the one with
    the largest finished_at (Datadog: "the most recently finished one"); of equals, the last
    in `deployments`' order, the order they were first POSTed."""
    chosen, chosen_ns = None, -1
    for event_id, attributes in deployments.items():
        finished_at = attributes.get("finished_at")
        if not selector.matches(attributes) or not isinstance(finished_at, int):
            continue
        if (finished_ns := nanoseconds(finished_at)) >= chosen_ns:
            chosen, chosen_ns = event_id, finished_ns
    return chosen


async def serve(standin: DoraStandin, port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve `standin` on 127.0.0.1:`port` (0: any free port); return the runner and URL."""
    # A short grace period: tests stop the server while requests still sleep in latency_s.
    runner = web.AppRunner(standin.make_app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


class StandinServer(DoraStandin):
    """`DoraStandin` served from an event loop in a daemon thread, for pytest.

    Takes `DoraStandin`'s arguments plus `port`; `url` is set once started.
    """

    def __init__(self, *args: Any, port: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url, self._port = "", port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> Self:
        """Start serving; returns once `url` accepts connections."""
        if self._loop is not None:
            raise RuntimeError("the stand-in is already running")
        self._loop = loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="dora-standin", daemon=True)
        self._thread.start()
        try:
            self._runner, self.url = self._call(serve(self, self._port))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving, then join the thread and close the loop. Idempotent."""
        if (loop := self._loop) is None or self._thread is None:
            return
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._call(loop.shutdown_default_executor())
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join()
        loop.close()
        self._loop = self._thread = self._runner = None

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _rate(text: str) -> tuple[int, int]:
    limit, _, period = text.partition("/")
    return int(limit), int(period)


async def _serve_until_signalled(standin: DoraStandin, port: int) -> None:
    runner, url = await serve(standin, port)
    print(f"stand-in DORA API listening on {url}", flush=True)
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m harness.standin", description=__doc__)
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--api-key", action="append", help="an accepted DD-API-KEY (repeatable)")
    parser.add_argument(
        "--app-key", default=DEFAULT_APP_KEY, help="the DD-APPLICATION-KEY of PATCH and DELETE"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=_rate, metavar="LIMIT/PERIOD_S", help="on failures")
    parser.add_argument("--duplicate-reset-header", action="store_true")
    parser.add_argument("--openapi", type=Path, help="default: $DORA_OPENAPI_PATH, shared spec")
    parser.add_argument("--request-log-size", type=int, default=10_000, help="records to keep")
    args = parser.parse_args(argv)
    keys = args.api_key or [DEFAULT_API_KEY]
    standin = DoraStandin(
        keys[0],
        app_key=args.app_key,
        extra_api_keys=keys[1:],
        openapi_path=args.openapi,
        request_log_size=args.request_log_size,
    )
    standin.latency_s = args.latency_ms / 1000
    if args.rate_limit:
        limit, period_s = args.rate_limit
        standin.rate_limit(limit, period_s, duplicate_reset_header=args.duplicate_reset_header)
    asyncio.run(_serve_until_signalled(standin, args.port))


if __name__ == "__main__":
    main()
