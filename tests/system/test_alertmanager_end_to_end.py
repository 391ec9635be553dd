"""A real Alertmanager -> ``serve``'s ``/sources/alertmanager`` -> Redis -> a real worker ->
the stand-in API: one alert's firing and resolution become one incident's start and finish.

Alertmanager repeats an unchanged firing group every ``repeat_interval`` (1 s here): each
repeat reaches ``serve`` and is enqueued, and must cost no request. Alertmanager does not
repeat a resolved notification (nothing is left firing in the group), so the test replays
the one it sent, byte for byte, as a receiver would see it re-sent after a timeout. To
replay it, Alertmanager's webhook goes through a relay that keeps each request and passes
it on unchanged (path, body, Authorization, Content-Type, User-Agent).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from forwarder.protocol import RedisKeys
from harness.alertmanager import SKIP_REASON, AlertmanagerProcess, alertmanager_binary
from harness.ingest_stream import progress, wait_settled
from harness.serve import ServeProcess, serve_env
from harness.stack import Worker, wait_until
from harness.standin import StandinServer
from workers.ingest.sources.ids import source_id

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(alertmanager_binary() is None, reason=SKIP_REASON),
]

INGEST_KEY = f"ingest-key-{uuid.uuid4().hex}"
PASSED_ON = ("authorization", "content-type", "user-agent")
"""The headers the relay passes on: all that ``serve`` reads of Alertmanager's."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def nanoseconds(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


@dataclass(frozen=True, slots=True)
class Relayed:
    """One notification Alertmanager sent, and what ``serve`` answered it."""

    path: str
    headers: dict[str, str]
    raw: bytes
    status: int


class Relay:
    """Alertmanager's webhook URL: passes each request on to ``serve``, keeps it, and gives
    Alertmanager ``serve``'s status (so a refusal is retried just as without the relay)."""

    def __init__(self, target: str) -> None:
        self.relayed: list[Relayed] = []
        lock = threading.Lock()
        relayed = self.relayed
        upstream = httpx.Client(base_url=target, timeout=10)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items() if k.lower() in PASSED_ON}
                status = upstream.post(self.path, content=raw, headers=headers).status_code
                with lock:
                    relayed.append(Relayed(self.path, headers, raw, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: what it relayed is asserted on, not printed."""

        self._upstream = upstream
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/sources/alertmanager"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def notifications(self, status: str) -> list[Relayed]:
        """The notifications relayed so far whose payload ``status`` is ``status``."""
        return [item for item in list(self.relayed) if json.loads(item.raw)["status"] == status]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._upstream.close()


@pytest.fixture
def serve(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[ServeProcess]:
    env = serve_env(
        redis_url, prefix, FORWARDER_INGEST_KEYS=INGEST_KEY, FORWARDER_ALERTMANAGER_SOURCE="true"
    )
    started = ServeProcess(env, tmp_path / "serve.log").wait_listening()
    yield started
    started.stop()
    assert INGEST_KEY not in started.log(), "the ingest key reached serve's log"


@pytest.fixture
def relay(serve: ServeProcess) -> Iterator[Relay]:
    started = Relay(serve.url)
    yield started
    started.close()


def test_an_alert_firing_repeated_and_resolved_is_one_incident_started_then_finished(
    serve: ServeProcess,
    relay: Relay,
    standin: StandinServer,
    start_worker: Callable[..., Worker],
    sync_redis: redis.Redis,
    keys: RedisKeys,
    tmp_path: Path,
) -> None:
    worker = start_worker()
    alertname = f"HighErrorRate{uuid.uuid4().hex[:8]}"
    labels = {
        "alertname": alertname,
        "service": "checkout",
        "team": "payments",
        "env": "prod",
        "severity": "critical",
    }
    annotations = {"summary": "5xx above 2% for 5 minutes"}
    starts_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    with AlertmanagerProcess(
        relay.url, INGEST_KEY, tmp_path / "am", repeat_interval="1s"
    ) as alertmanager:
        alertmanager.post_alert(labels, annotations, starts_at)
        [held] = alertmanager.alerts()
        incident = source_id("alertmanager", held["fingerprint"], str(nanoseconds(starts_at)))

        # Firing: the worker sends the start, with every mapped field.
        [start] = wait_until(
            lambda: standin.requests_for(incident),
            timeout_s=30,
            what="the incident's start at the stand-in",
        )
        assert (start.method, start.status) == ("POST", 202)
        assert start.attributes == {
            "id": incident,
            "services": ["checkout"],
            "team": "payments",
            "env": "prod",
            "severity": "critical",
            "name": f"{alertname}: 5xx above 2% for 5 minutes",
            "started_at": nanoseconds(starts_at),
        }

        # Alertmanager sends the unchanged group again: enqueued, folded, no request.
        wait_until(
            lambda: len(relay.notifications("firing")) >= 2,
            timeout_s=15,
            what="alertmanager re-sending the firing notification",
        )
        first, repeated = relay.notifications("firing")[:2]
        assert repeated.raw == first.raw, "not a re-send of the same notification"
        assert (first.status, repeated.status) == (202, 202)
        assert first.headers["Authorization"] == f"Bearer {INGEST_KEY}"
        settled = wait_settled(sync_redis, keys, added=2)
        # Folded apart, the re-send is counted unchanged; folded in one batch with the first
        # (a pump between runs when it came), it is coalesced. Either way: no request.
        assert settled.folded == 2
        assert len(standin.requests_for(incident)) == 1, "a re-sent notification cost a request"

        # Resolved: the finish of the same incident, its start kept.
        ends_at = datetime.now(UTC).replace(microsecond=250_000) - timedelta(seconds=1)
        alertmanager.resolve(labels, annotations, starts_at, ends_at)
        _, finish = wait_until(
            lambda: (requests := standin.requests_for(incident))[1:] and requests,
            timeout_s=15,
            what="the incident's finish at the stand-in",
        )
    assert (finish.method, finish.status) == ("POST", 202)
    assert finish.attributes == {**start.attributes, "finished_at": nanoseconds(ends_at)}
    [resolved] = relay.notifications("resolved")
    assert resolved.status == 202
    assert standin.latest()[incident]["finished_at"] == nanoseconds(ends_at)

    # The resolved notification again, and a late copy of the firing one: nothing more.
    before = wait_settled(sync_redis, keys, added=progress(sync_redis, keys).added)
    with httpx.Client(base_url=serve.url, timeout=10) as client:
        for notification in (resolved, first):
            answer = client.post(
                notification.path, content=notification.raw, headers=notification.headers
            )
            assert answer.status_code == 202, answer.text
            assert [item["id"] for item in answer.json()["accepted"]] == [incident]
    after = wait_settled(sync_redis, keys, added=before.added + 2)
    assert after.unchanged == before.unchanged + 2
    assert [r.method for r in standin.requests_for(incident)] == ["POST", "POST"]
    assert standin.latest()[incident] == finish.attributes
    assert after.dead == 0
    worker.stop()
    assert INGEST_KEY not in worker.log()
