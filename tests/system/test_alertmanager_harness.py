"""The real-Alertmanager harness, against a recording receiver: what Alertmanager sends.

Before the ingest endpoint is tested against it, these tests pin down the sender itself:
the Bearer key it sends, payload version 4, the fingerprint and times it reports, when it
sends a resolution, and that it sends an unchanged group again after ``repeat_interval``
(byte for byte the same body: the case a receiver must absorb without a new request).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.alertmanager import SKIP_REASON, AlertmanagerProcess, alertmanager_binary
from harness.stack import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(alertmanager_binary() is None, reason=SKIP_REASON),
]


@dataclass(frozen=True)
class Notification:
    """One request Alertmanager made, as the receiver saw it."""

    received_at: float
    """``time.monotonic()`` on arrival."""
    path: str
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]


class RecordingReceiver:
    """A webhook receiver on 127.0.0.1 that answers 200 and keeps every request."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        lock = threading.Lock()
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                notification = Notification(
                    time.monotonic(), self.path, dict(self.headers.items()), raw, json.loads(raw)
                )
                with lock:
                    received.append(notification)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the notifications are asserted on, not printed."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/sources/alertmanager"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Notification]:
        """The first ``count`` notifications, once that many have arrived."""
        wait_until(
            lambda: len(self.notifications) >= count,
            timeout_s=timeout_s,
            what=f"{count} notification(s) from alertmanager",
        )
        return self.notifications[:count]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    started = RecordingReceiver()
    yield started
    started.close()


@pytest.fixture
def ingest_key() -> str:
    return f"ingest-key-{uuid.uuid4().hex}"


def _labels() -> dict[str, str]:
    return {"alertname": f"HighErrorRate-{uuid.uuid4().hex[:8]}", "service": "checkout"}


def test_a_firing_alert_then_its_resolution_reach_the_webhook(
    receiver: RecordingReceiver,
    ingest_key: str,
    tmp_path: Path,
) -> None:
    labels = _labels()
    annotations = {"summary": "5xx above 2%"}
    starts_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    with AlertmanagerProcess(receiver.url, ingest_key, tmp_path / "am") as alertmanager:
        posted = time.monotonic()
        alertmanager.post_alert(labels, annotations, starts_at)
        [firing] = receiver.wait_for(1)
        print(f"firing_after_s={firing.received_at - posted:.3f}")

        assert firing.path == "/sources/alertmanager"
        assert firing.headers["Authorization"] == f"Bearer {ingest_key}"
        assert firing.body["version"] == "4"
        assert firing.body["status"] == "firing"
        [alert] = firing.body["alerts"]
        [held] = alertmanager.alerts()
        assert alert["fingerprint"] == held["fingerprint"]
        assert alert["status"] == "firing"
        assert alert["labels"] == labels
        assert alert["annotations"] == annotations
        assert datetime.fromisoformat(alert["startsAt"]) == starts_at
        assert alert["endsAt"] == "0001-01-01T00:00:00Z"

        resolving = time.monotonic()
        ends_at = alertmanager.resolve(labels, annotations, starts_at)
        _, resolved = receiver.wait_for(2)
        print(f"resolved_after_s={resolved.received_at - resolving:.3f}")

        assert resolved.headers["Authorization"] == f"Bearer {ingest_key}"
        assert resolved.body["status"] == "resolved"
        [alert_resolved] = resolved.body["alerts"]
        assert alert_resolved["status"] == "resolved"
        assert alert_resolved["fingerprint"] == alert["fingerprint"]
        assert datetime.fromisoformat(alert_resolved["startsAt"]) == starts_at
        assert datetime.fromisoformat(alert_resolved["endsAt"]) == ends_at
        assert ingest_key not in alertmanager.log()


def test_an_unchanged_group_is_sent_again_byte_for_byte_after_repeat_interval(
    receiver: RecordingReceiver, ingest_key: str, tmp_path: Path
) -> None:
    labels = _labels()
    starts_at = datetime.now(UTC).replace(microsecond=0)
    with AlertmanagerProcess(
        receiver.url, ingest_key, tmp_path / "am", repeat_interval="1s"
    ) as alertmanager:
        alertmanager.post_alert(labels, {"summary": "still failing"}, starts_at)
        first, repeated = receiver.wait_for(2)
        print(f"repeated_after_s={repeated.received_at - first.received_at:.3f}")

    assert repeated.body["status"] == "firing"
    assert repeated.raw == first.raw
