"""A local stand-in for Datadog's DORA Metrics API, for integration tests and benchmarks.

It validates and records `POST /api/v2/dora/{failure,incident,deployment}` as Datadog does
(/work/shared/reference/DORA-API.md) and lets tests inject latency, forced statuses, dropped
connections, calendar-aligned rate limits and requests applied late (after the client gave
up). Run in-process with `StandinServer`, or as
`python -m harness.standin --port 0 --api-key KEY [--latency-ms 50] [--rate-limit 100/10]`.
Both modes serve `GET /_standin/state`, `GET /_standin/requests`, `POST /_standin/behaviour` and
`POST /_standin/reset`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.client import responses as reason_phrases
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

import yaml
from aiohttp import web
from jsonschema.exceptions import best_match
from multidict import CIMultiDict
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT4

if TYPE_CHECKING:
    from referencing._core import Resolver  # not re-exported by referencing

# A copy of Datadog's published spec (DORA paths only), so that a fresh clone is complete.
DEFAULT_OPENAPI_PATH = Path(__file__).resolve().parent / "data" / "dora-openapi.yaml"
DEFAULT_API_KEY = "standin-api-key"
KIND_OF_PATH = {
    "/api/v2/dora/failure": "dora_failure",
    "/api/v2/dora/incident": "dora_failure",  # legacy path, same schema and response type
    "/api/v2/dora/deployment": "dora_deployment",
}
JSONAPI_TYPE = "application/vnd.api+json"
SCHEMA_OF_KIND = {"dora_failure": "DORAFailureRequest", "dora_deployment": "DORADeploymentRequest"}
Headers = Mapping[str, str] | None
# The schema states the id rule only in prose, but Datadog enforces it.
_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{16,128}")
_RATE_HEADERS = [f"X-RateLimit-{h}" for h in ("Limit", "Period", "Remaining", "Reset", "Name")]
_SPEC_URI = "urn:dora-openapi"
_NOT_JSON = object()
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One POST to a DORA endpoint; `status` is 0 when its connection was dropped."""

    path: str
    status: int
    attributes: dict[str, Any] | None
    headers: dict[str, str]
    received_at: float  # time.monotonic() on arrival, before any injected latency
    received_wall: float = 0.0  # wall_clock() on arrival: places it in a rate-limit window


@dataclass(frozen=True, slots=True)
class _Canned:
    status: int  # 0: drop the connection
    headers: Headers = None
    body: Any = None

    def response(self) -> web.Response:
        body, phrase = self.body, reason_phrases.get(self.status, "Error")
        if body is None:
            body = _bad_request(phrase, "") if self.status == 400 else {"errors": [phrase]}
        if isinstance(body, str):  # e.g. an HTML 429 page, as datadogpy once received
            payload, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(body).encode(), "application/json"
        headers = CIMultiDict({"Content-Type": content_type})
        headers.update(self.headers or {})
        return web.Response(status=self.status, body=payload, headers=headers)


_DROP = _Canned(0)


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


class _Invalid(Exception):
    """args: (detail, JSON pointer to the offending value)."""


def _bad_request(detail: str, pointer: str) -> dict[str, Any]:
    error = {"status": "400", "title": "Bad Request", "detail": detail}
    return {"errors": [{**error, "source": {"pointer": pointer}}]}


def _json(status: int, body: Any, content_type: str = "application/json") -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=content_type)


def _nanoseconds(timestamp: int) -> int:
    """Datadog infers the unit from the magnitude: seconds, milliseconds or nanoseconds."""
    if timestamp < 10**11:
        return timestamp * 10**9
    return timestamp * 10**6 if timestamp < 10**14 else timestamp


def _attributes(body: Any) -> dict[str, Any] | None:
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


def load_validators(openapi_path: str | Path | None = None) -> dict[str, OAS30Validator]:
    """One validator per kind, its `#/components/...` refs resolved within the document.

    They are resolved once here: per-request $ref lookups made validation 2.2x slower.
    """
    path = Path(openapi_path or os.environ.get("DORA_OPENAPI_PATH") or DEFAULT_OPENAPI_PATH)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI, DRAFT4.create_resource(document))
    resolver = registry.resolver(_SPEC_URI)
    return {
        kind: OAS30Validator(
            _inline_refs({"$ref": f"#/components/schemas/{schema}"}, resolver),
            format_checker=oas30_format_checker,
        )
        for kind, schema in SCHEMA_OF_KIND.items()
    }


class DoraStandin:
    """The stand-in's behaviours and records; `make_app()` serves them. Thread-safe.

    `latency_s` delays every answer from a DORA endpoint (the control endpoints never wait).
    `wall_clock` places rate-limit windows; tests pin it to make windows deterministic.
    `request_log_size` bounds `requests()` (each record costs ~2.5 kB) for long benchmarks.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        extra_api_keys: Iterable[str] = (),
        openapi_path: str | Path | None = None,
        wall_clock: Callable[[], float] = time.time,
        request_log_size: int | None = None,
    ) -> None:
        self.api_key, self.api_keys = api_key, frozenset([api_key, *extra_api_keys])
        self._validators = load_validators(openapi_path)
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
        self._latest: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in SCHEMA_OF_KIND}
        self._counts: Counter[int] = Counter()
        self._throttled: dict[str, Counter[int]] = {k: Counter() for k in SCHEMA_OF_KIND}

    def respond_next(
        self, status: int, count: int = 1, headers: Headers = None, body: Any = None
    ) -> None:
        """Answer the next `count` DORA POSTs with `status`, whatever they contain.

        They skip auth and rate limiting and are never recorded as accepted. `body` (JSON-able,
        or a str sent as text/plain) defaults to Datadog's error body for that status. Calls
        queue up, in order, behind earlier `respond_next` and `drop_next` ones.
        """
        with self._lock:
            self._forced.extend([_Canned(status, headers, body)] * count)

    def respond_always(self, status: int | None, headers: Headers = None, body: Any = None) -> None:
        """Answer every POST (an outage) like `respond_next`, until called with None.

        Queued `respond_next` and `drop_next` answers still come first.
        """
        with self._lock:
            self._always = None if status is None else _Canned(status, headers, body)

    def drop_next(self, count: int = 1) -> None:
        """Close the connections of the next `count` DORA POSTs without answering them.

        Drops and `respond_next` answers queue up together, in the order they were asked for.
        """
        with self._lock:
            self._forced.extend([_DROP] * count)

    def apply_late(self, count: int = 1, hold_s: float = 2.0) -> None:
        """Hold the next `count` DORA POSTs `hold_s` seconds, then answer and apply them.

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

        `name` is both the X-RateLimit-Name and the kind of endpoint limited: "dora_failure"
        (/failure and /incident) or "dora_deployment". Every response from those endpoints
        carries X-RateLimit-* headers; `duplicate_reset_header` sends Reset twice, as Datadog
        sometimes does. `limit=None` lifts the limit.
        """
        if name not in SCHEMA_OF_KIND:
            raise ValueError(f"name must be one of {sorted(SCHEMA_OF_KIND)}, got {name!r}")
        with self._lock:
            self._limits.pop(name, None)
            if limit is not None:
                self._limits[name] = _RateLimit(limit, period_s, name, duplicate_reset_header)

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Apply behaviours sent as JSON: `latency_s`, or a behaviour method's name mapped to
        its argument or to an object of its keyword arguments."""
        methods = {"respond_next", "respond_always", "drop_next", "rate_limit", "apply_late"}
        if unknown := set(settings) - methods - {"latency_s"}:
            raise ValueError(f"unknown behaviour settings: {sorted(unknown)}")
        if "latency_s" in settings:
            self.latency_s = float(settings["latency_s"])
        for name in methods & set(settings):
            value = settings[name]
            if isinstance(value, dict):
                getattr(self, name)(**value)
            else:
                getattr(self, name)(value)

    def reset(self) -> None:
        """Forget all records and behaviours."""
        with self._lock:
            self._clear()

    def requests(self) -> list[RecordedRequest]:
        """The DORA POSTs so far (the last `request_log_size` of them), in arrival order."""
        with self._lock:
            return list(self._requests)

    def latest(self, kind: str = "dora_failure") -> dict[str, dict[str, Any]]:
        """id -> attributes of the last accepted event with that id (Datadog upserts by id)."""
        with self._lock:
            return dict(self._latest[kind])

    def status_counts(self) -> dict[int, int]:
        """How many DORA POSTs got each status (0 = dropped)."""
        with self._lock:
            return dict(self._counts)

    def throttled_per_window(self, kind: str = "dora_failure") -> dict[int, int]:
        """Rate-limit 429s by window index, floor(wall_clock() / period_s)."""
        with self._lock:
            return dict(self._throttled[kind])

    def regressions(self) -> list[str]:
        """Ids of accepted requests that sent a start-only state after a finish for that id.

        A forwarder must never send one: Datadog would be left without the finish.
        """
        finished: set[str] = set()
        regressed: list[str] = []
        for request in self.requests():
            if request.status not in (200, 202) or request.attributes is None:
                continue
            incident = request.attributes.get("id")
            if "finished_at" in request.attributes:
                finished.add(str(incident))
            elif incident in finished:
                regressed.append(str(incident))
        return regressed

    def state(self, include_latest: bool = True) -> dict[str, Any]:
        """Records and behaviours as JSON; what `GET /_standin/state` answers."""
        with self._lock:
            return {
                "requests": self._counts.total(),
                "status_counts": {str(s): n for s, n in sorted(self._counts.items())},
                "latest": {k: dict(v) for k, v in self._latest.items()} if include_latest else None,
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
        for path in KIND_OF_PATH:
            app.router.add_post(path, self._handle_event)
        app.router.add_get("/_standin/state", self._handle_state)
        app.router.add_get("/_standin/requests", self._handle_requests)
        app.router.add_post("/_standin/behaviour", self._handle_behaviour)
        app.router.add_post("/_standin/reset", self._handle_reset)
        return app

    async def _handle_event(self, request: web.Request) -> web.Response:
        received_at, kind = time.monotonic(), KIND_OF_PATH[request.path]
        received_wall = self._wall_clock()
        # Read first: a client that gives up during the latency or a hold closes the
        # connection, and what the server already has must still count.
        try:
            body = json.loads(await request.read())
        except ValueError:  # also bodies that are not UTF-8
            body = _NOT_JSON
        with self._lock:
            hold_s = self._late.popleft() if self._late else None
            self._held += hold_s is not None
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if hold_s is not None:
            await asyncio.sleep(hold_s)
        authorised = request.headers.get("DD-API-KEY") in self.api_keys
        with self._lock:
            canned = self._forced.popleft() if self._forced else self._always
            admitted, limit_headers = True, None
            if limit := self._limits.get(kind):
                consume = canned is None and authorised
                admitted, limit_headers = limit.admit(self._wall_clock(), consume)
                if not admitted:
                    self._throttled[kind][limit.window] += 1

        if canned is _DROP and request.transport is not None:
            request.transport.close()  # aiohttp then skips writing the response
        response, event_id = self._answer(kind, body, canned, authorised, admitted)
        if limit_headers is not None:
            response.headers.extend(limit_headers)

        status, attributes = (0 if canned is _DROP else response.status), _attributes(body)
        headers = dict(request.headers)
        record = RecordedRequest(
            request.path, status, attributes, headers, received_at, received_wall
        )
        with self._lock:
            self._requests.append(record)
            self._counts[status] += 1
            if status == 202 and attributes is not None:
                self._latest[kind][event_id] = attributes
            if hold_s is not None:
                self._held -= 1
                self._applied_late += 1
        return response

    def _answer(
        self, kind: str, body: Any, canned: _Canned | None, authorised: bool, admitted: bool
    ) -> tuple[web.Response, str]:
        """The response and, when accepted, the event's id."""
        if canned is _DROP:
            return web.Response(), ""
        if canned is not None:
            return canned.response(), ""
        if not authorised:
            return _json(403, {"errors": ["Forbidden"]}), ""
        if not admitted:
            return _json(429, {"errors": ["Too many requests"]}), ""
        try:
            event_id = self._validate(kind, body)
        except _Invalid as invalid:
            return _json(400, _bad_request(*invalid.args)), ""
        return _json(202, {"data": {"id": event_id, "type": kind}}, JSONAPI_TYPE), event_id

    def _validate(self, kind: str, body: Any) -> str:
        """Return the event's id (a new uuid4 when it has none), or raise `_Invalid`."""
        if body is _NOT_JSON:
            raise _Invalid("Request body is not valid JSON", "")
        if error := best_match(self._validators[kind].iter_errors(body)):
            path = [str(p) for p in error.absolute_path]
            if error.validator == "required":  # point at the missing field, not its parent
                path += [f for f in error.validator_value if f not in error.instance][:1]
            pointer = "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)
            raise _Invalid(error.message, pointer)
        attributes = body["data"]["attributes"]
        event_id = attributes.get("id")
        if event_id is not None and not _EVENT_ID.fullmatch(event_id):
            raise _Invalid("id must be 16-128 characters of [A-Za-z0-9._:-]", "/data/attributes/id")
        if kind == "dora_failure" and not (attributes.get("services") or attributes.get("team")):
            raise _Invalid("services or team is required", "/data/attributes/services")
        finished_at, started_at = attributes.get("finished_at"), attributes["started_at"]
        if finished_at is not None and _nanoseconds(finished_at) < _nanoseconds(started_at):
            raise _Invalid("finished_at is before started_at", "/data/attributes/finished_at")
        return event_id or str(uuid.uuid4())

    async def _handle_state(self, request: web.Request) -> web.Response:
        return _json(200, self.state(include_latest=request.query.get("latest") != "0"))

    async def _handle_requests(self, request: web.Request) -> web.Response:
        # Compact, for benchmarks: received_at is time.monotonic(), the same clock in every
        # process of this machine, so a publisher can measure publish-to-receipt latency.
        rows = [
            {
                "id": (r.attributes or {}).get("id"),
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
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=_rate, metavar="LIMIT/PERIOD_S", help="on failures")
    parser.add_argument("--duplicate-reset-header", action="store_true")
    parser.add_argument("--openapi", type=Path, help="default: $DORA_OPENAPI_PATH, shared spec")
    parser.add_argument("--request-log-size", type=int, default=10_000, help="records to keep")
    args = parser.parse_args(argv)
    keys = args.api_key or [DEFAULT_API_KEY]
    standin = DoraStandin(
        keys[0],
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
