"""GitHub, PagerDuty and GitLab webhooks -> ``serve``'s ``/sources/*`` -> Redis -> a real
worker -> the stand-in API, with each system's published example payloads
(tests/data/sources/SOURCES.md) sent as that system sends them: the raw file as the body,
signed as it signs, with its event headers.

Each test proves, for its source: a delivery whose proof is missing (401) or wrong (403) is
not enqueued; an event type the source does not map is answered 200 and not enqueued; the
mapped event reaches the stand-in with each field taken from the payload; and a delivery
sent again (a redelivery, a retry after a timeout) is folded by the worker without a second
request. "Not enqueued" is read from Redis' count of entries ever added to the ingest
stream; "folded without a request" from the workers' counters (``harness.ingest_stream``).
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from forwarder.protocol import RedisKeys
from harness.ingest_stream import progress, wait_settled
from harness.serve import ServeProcess, serve_env
from harness.stack import Worker, wait_until
from harness.standin import RecordedRequest, StandinServer
from workers.ingest.sources.ids import source_id

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "sources"
INGEST_KEY = f"ingest-key-{uuid.uuid4().hex}"
GITHUB_SECRET = f"github-secret-{uuid.uuid4().hex}"
PAGERDUTY_SECRET = f"pagerduty-secret-{uuid.uuid4().hex}"
GITLAB_TOKEN = f"gitlab-token-{uuid.uuid4().hex}"
WRONG_TOKEN = f"not-the-token-{uuid.uuid4().hex}"
SECRETS = (INGEST_KEY, GITHUB_SECRET, PAGERDUTY_SECRET, GITLAB_TOKEN)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def published(name: str) -> bytes:
    """A published example, byte for byte: the body exactly as the source would send it."""
    return (DATA / name).read_bytes()


def nanoseconds(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


def iso_ns(text: str) -> int:
    """GitHub's and PagerDuty's times (ISO 8601, ``Z``) in nanoseconds."""
    return nanoseconds(datetime.fromisoformat(text))


def gitlab_ns(text: str) -> int:
    """GitLab's ``2021-04-28 21:50:00 +0200`` (Ruby's ``Time#to_s``) in nanoseconds."""
    return nanoseconds(datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z"))


def hmac_hex(secret: str, body: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret.encode(), body, digest).hexdigest()


@dataclass
class Sources:
    """A real ``serve`` with the three sources on, and the Redis it enqueues into."""

    serve: ServeProcess
    client: httpx.Client
    redis: redis.Redis
    keys: RedisKeys

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.client.post(f"/sources/{source}", content=body, headers=headers)

    def added(self) -> int:
        """Entries ever added to the ingest stream (``serve`` answers after its XADD)."""
        return progress(self.redis, self.keys).added

    def refused(self, source: str, body: bytes, headers: dict[str, str], status: int) -> None:
        """The delivery is refused with ``status``, and nothing is enqueued."""
        before = self.added()
        answer = self.post(source, body, headers)
        assert answer.status_code == status, answer.text
        assert self.added() == before, "a refused delivery was enqueued"

    def ignored(self, source: str, body: bytes, headers: dict[str, str]) -> str:
        """The delivery is answered 200 saying what it ignores, and nothing is enqueued."""
        before = self.added()
        answer = self.post(source, body, headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == []
        [ignored] = answer.json()["ignored"]
        assert self.added() == before, "an ignored delivery was enqueued"
        return str(ignored["what"])

    def accepted(self, source: str, body: bytes, headers: dict[str, str]) -> list[str]:
        """The delivery is answered 202, once its events are in the stream; their ids."""
        before = self.added()
        answer = self.post(source, body, headers)
        assert answer.status_code == 202, answer.text
        ids = [str(item["id"]) for item in answer.json()["accepted"]]
        assert self.added() == before + len(ids), "answered 202 before its XADD"
        return ids

    def repeats_cost_nothing(
        self, standin: StandinServer, deliveries: list[tuple[str, bytes, dict[str, str]]]
    ) -> None:
        """Send each delivery again: each is enqueued, folded as unchanged, and no request
        reaches the stand-in (every request so far is settled before, and counted)."""
        before = wait_settled(self.redis, self.keys, added=self.added())
        requests = standin.requests()
        for source, body, headers in deliveries:
            self.accepted(source, body, headers)
        after = wait_settled(self.redis, self.keys, added=before.added + len(deliveries))
        assert after.unchanged == before.unchanged + len(deliveries)
        assert after.dead == 0
        assert standin.requests() == requests, "a repeated delivery cost a request"


@pytest.fixture
def sources(
    redis_url: str, prefix: str, tmp_path: Path, sync_redis: redis.Redis, keys: RedisKeys
) -> Iterator[Sources]:
    env = serve_env(
        redis_url,
        prefix,
        FORWARDER_INGEST_KEYS=INGEST_KEY,
        FORWARDER_GITHUB_WEBHOOK_SECRET=GITHUB_SECRET,
        FORWARDER_PAGERDUTY_WEBHOOK_SECRET=PAGERDUTY_SECRET,
        FORWARDER_GITLAB_WEBHOOK_TOKEN=GITLAB_TOKEN,
    )
    serve = ServeProcess(env, tmp_path / "serve.log").wait_listening()
    try:
        with httpx.Client(base_url=serve.url, timeout=10) as client:
            yield Sources(serve, client, sync_redis, keys)
    finally:
        serve.stop()
    log = serve.log()
    assert not [secret for secret in SECRETS if secret in log], "a secret reached serve's log"


def delivered(standin: StandinServer, event_id: str, count: int) -> list[RecordedRequest]:
    """The requests for ``event_id`` once there are ``count`` (all answered 202)."""
    requests: list[RecordedRequest] = wait_until(
        lambda: (found := standin.requests_for(event_id))[count - 1 :] and found,
        timeout_s=30,
        what=f"{count} request(s) for {event_id} at the stand-in",
    )
    assert [(r.method, r.status) for r in requests] == [("POST", 202)] * count
    return requests


# --- GitHub ------------------------------------------------------------------------------


def github_headers(body: bytes, event: str, secret: str = GITHUB_SECRET) -> dict[str, str]:
    """What GitHub sends with a webhook whose secret is ``secret``."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature": f"sha1={hmac_hex(secret, body, 'sha1')}",
        "X-Hub-Signature-256": f"sha256={hmac_hex(secret, body)}",
    }


def test_github_deployment_status_success_is_one_deployment(
    sources: Sources, standin: StandinServer, start_worker: Callable[..., Worker]
) -> None:
    start_worker()
    body = published("github_deployment_status_success.json")
    payload: dict[str, Any] = json.loads(body)
    deployment, status = payload["deployment"], payload["deployment_status"]
    repository = payload["repository"]
    deployment_id = f"github-deployment:github.com:{deployment['id']}"
    headers = github_headers(body, "deployment_status")

    tampered = body.replace(b'"production"', b'"tampered"')
    assert tampered != body
    sources.refused("github", tampered, headers, 403)
    sources.refused("github", body, github_headers(body, "deployment_status", "other"), 403)
    unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    sources.refused("github", body, unsigned, 401)

    ping = published("github_ping.json")
    assert sources.ignored("github", ping, github_headers(ping, "ping")) == "ping"
    in_progress = published("github_deployment_status_in_progress.json")
    what = sources.ignored("github", in_progress, github_headers(in_progress, "deployment_status"))
    assert "in_progress" in what
    assert "push" in sources.ignored("github", ping, github_headers(ping, "push"))
    assert sources.added() == 0

    assert sources.accepted("github", body, headers) == [deployment_id]
    [request] = delivered(standin, deployment_id, 1)
    assert request.attributes == {
        "id": deployment_id,
        "service": repository["name"],
        "env": deployment["environment"],
        "version": deployment["ref"],
        "git": {"repository_url": repository["html_url"], "commit_sha": deployment["sha"]},
        "started_at": iso_ns(deployment["created_at"]),
        "finished_at": iso_ns(status["created_at"]),
    }
    # GitHub's "Redeliver": the same body and headers, the same X-GitHub-Delivery.
    sources.repeats_cost_nothing(standin, [("github", body, headers)])
    assert len(standin.requests()) == 1


# --- PagerDuty ---------------------------------------------------------------------------


def pagerduty_headers(body: bytes, *secrets: str) -> dict[str, str]:
    """What a PagerDuty v3 subscription sends: one ``v1=`` signature per signing secret."""
    signatures = ",".join(
        f"v1={hmac_hex(secret, body)}" for secret in secrets or [PAGERDUTY_SECRET]
    )
    return {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "PagerDuty-Webhook/V3.0",
        "X-PagerDuty-Signature": signatures,
        "X-Webhook-Id": str(uuid.uuid4()),
        "X-Webhook-Subscription": "PSFEVL7",
    }


def resolution_of(triggered: dict[str, Any], after: timedelta) -> bytes:
    """The published ``incident.resolved`` example, made the resolution of ``triggered``'s
    incident: its incident id and a time ``after`` the trigger are the only edits (the
    published trigger and resolution are two incidents, resolved before triggered)."""
    resolved: dict[str, Any] = json.loads(published("pagerduty_incident_resolved.json"))
    event = resolved["event"]
    event["data"]["id"] = triggered["event"]["data"]["id"]
    occurred = datetime.fromisoformat(triggered["event"]["occurred_at"]) + after
    event["occurred_at"] = occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(resolved, indent=2).encode()


def test_pagerduty_triggered_then_resolved_is_one_incident_started_then_finished(
    sources: Sources, standin: StandinServer, start_worker: Callable[..., Worker]
) -> None:
    start_worker()
    triggered = published("pagerduty_incident_triggered.json")
    trigger: dict[str, Any] = json.loads(triggered)
    incident = trigger["event"]["data"]
    incident_id = source_id("pagerduty", incident["id"])
    headers = pagerduty_headers(triggered)

    tampered = triggered.replace(b"Test Incident 3", b"Tampered Incident")
    assert tampered != triggered
    sources.refused("pagerduty", tampered, headers, 403)
    sources.refused("pagerduty", triggered, pagerduty_headers(triggered, "other"), 403)
    unsigned = {k: v for k, v in headers.items() if k != "X-PagerDuty-Signature"}
    sources.refused("pagerduty", triggered, unsigned, 401)

    for name in (
        "pagerduty_incident_acknowledged.json",
        "pagerduty_incident_priority_updated.json",
    ):
        other = published(name)
        event_type = json.loads(other)["event"]["event_type"]
        assert event_type in sources.ignored("pagerduty", other, pagerduty_headers(other))
    assert sources.added() == 0

    assert sources.accepted("pagerduty", triggered, headers) == [incident_id]
    [start] = delivered(standin, incident_id, 1)
    # The recorded delivery has no data.created_at: the trigger's occurred_at is the start.
    assert "created_at" not in incident
    assert start.attributes == {
        "id": incident_id,
        "services": [incident["service"]["summary"]],
        "name": incident["title"],
        "severity": incident["urgency"],
        "started_at": iso_ns(trigger["event"]["occurred_at"]),
    }

    resolved = resolution_of(trigger, timedelta(minutes=20))
    # Signed during a secret rotation: the old secret's signature, then the current one's.
    resolved_headers = pagerduty_headers(resolved, "old-secret", PAGERDUTY_SECRET)
    assert sources.accepted("pagerduty", resolved, resolved_headers) == [incident_id]
    _, finish = delivered(standin, incident_id, 2)
    finished_at = iso_ns(json.loads(resolved)["event"]["occurred_at"])
    assert finish.attributes == {**start.attributes, "finished_at": finished_at}

    sources.repeats_cost_nothing(
        standin, [("pagerduty", resolved, resolved_headers), ("pagerduty", triggered, headers)]
    )
    assert standin.latest()[incident_id] == finish.attributes
    assert len(standin.requests()) == 2


# --- GitLab ------------------------------------------------------------------------------


def gitlab_headers(event: str = "Deployment Hook", token: str = GITLAB_TOKEN) -> dict[str, str]:
    """What a GitLab project hook whose secret token is ``token`` sends."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/16.11.0",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        "X-Gitlab-Instance": "http://10.126.0.2:3000",
    }


def test_gitlab_running_then_success_is_one_deployment_from_running_to_success(
    sources: Sources, standin: StandinServer, start_worker: Callable[..., Worker]
) -> None:
    start_worker()
    running, success = (
        published("gitlab_deployment_running.json"),
        published("gitlab_deployment_success.json"),
    )
    payload: dict[str, Any] = json.loads(success)
    project = payload["project"]
    deployment_id = f"gitlab-deployment:10.126.0.2:{payload['deployment_id']}"
    headers = gitlab_headers()

    sources.refused("gitlab", success, gitlab_headers(token=WRONG_TOKEN), 403)
    unsigned = {k: v for k, v in headers.items() if k != "X-Gitlab-Token"}
    sources.refused("gitlab", success, unsigned, 401)
    assert "Pipeline Hook" in sources.ignored("gitlab", success, gitlab_headers("Pipeline Hook"))

    # The running status is kept in Redis for its success, not enqueued.
    answer = sources.post("gitlab", running, headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == []
    [held] = answer.json()["held"]
    assert deployment_id in held["what"]
    assert sources.added() == 0

    assert sources.accepted("gitlab", success, headers) == [deployment_id]
    [request] = delivered(standin, deployment_id, 1)
    commit_sha = payload["commit_url"].rsplit("/", 1)[1]
    assert len(commit_sha) == 40
    assert request.attributes == {
        "id": deployment_id,
        "service": project["name"],
        "env": payload["environment"],
        "git": {"repository_url": project["web_url"], "commit_sha": commit_sha},
        "started_at": gitlab_ns(json.loads(running)["status_changed_at"]),
        "finished_at": gitlab_ns(payload["status_changed_at"]),
    }

    sources.repeats_cost_nothing(
        standin, [("gitlab", success, headers), ("gitlab", running, headers)]
    )
    assert len(standin.requests()) == 1
