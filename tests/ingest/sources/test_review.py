"""The webhook sources under hostile and unlucky input (issue 13's review): each test is a
case found by reading the code against the sources' documented behaviour.

The endpoint cases run the app in-process (httpx's ASGITransport, its lifespan entered as
a server would) against real Redis, under this test's key prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from config import load_settings
from forwarder.entry import decode_entry
from forwarder.protocol import RedisKeys
from forwarder.rules import MAX_TEXT_CHARS
from harness import streams
from workers.ingest.app import create_app
from workers.ingest.keys import IngestKeys
from workers.ingest.sources import gitlab as gitlab_module
from workers.ingest.sources.alertmanager import map_notification
from workers.ingest.sources.github import map_event
from workers.ingest.sources.gitlab import DEPLOYMENT_HOOK, read_status
from workers.ingest.sources.mapped import Mapped
from workers.ingest.sources.mapping_file import SourcesMapping
from workers.ingest.sources.pagerduty import map_webhook

from .payloads import load

KEY = f"ingest-key-{uuid.uuid4().hex}"
GITHUB_SECRET = f"github-secret-{uuid.uuid4().hex}"
GITLAB_TOKEN = f"gitlab-token-{uuid.uuid4().hex}"
DEFAULTS = SourcesMapping()

Serving = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serving(redis_url: str, prefix: str, clean_env: None) -> Serving:
    """The app on this test's prefix with every source on, and a client of it."""

    @asynccontextmanager
    async def serve() -> AsyncIterator[httpx.AsyncClient]:
        settings = load_settings(
            redis_url=redis_url,
            key_prefix=prefix,
            ingest_keys=SecretStr(KEY),
            alertmanager_source=True,
            github_webhook_secret=SecretStr(GITHUB_SECRET),
            gitlab_webhook_token=SecretStr(GITLAB_TOKEN),
        )
        app = create_app(settings, IngestKeys.from_settings(settings.ingest_keys, None))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as c:
                yield c

    return serve


def enqueued_ids(sync_redis: redis.Redis, keys: RedisKeys) -> list[str]:
    return [decode_entry(fields).event_id for _, fields in streams.entries(sync_redis, keys.ingest)]


def alert(fingerprint: str, labels: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {},
        "startsAt": "2020-02-06T00:17:58.432911368Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
        **fields,
    }


def notification(*alerts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "alerts": list(alerts), **fields}


def raw_json(document: Any) -> bytes:
    """JSON text as a sender may write it: ``\\ud800`` escapes left as they are."""
    return json.dumps(document, ensure_ascii=True).encode()


# --- never a 500: a lone surrogate in what the answer names ---------------------------------


@pytest.mark.anyio
async def test_alert_with_a_label_name_no_utf8_can_hold_is_refused_alone_not_a_500(
    serving: Serving, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """A label named by a lone surrogate (``"\\ud800"`` is valid JSON text) with a value that
    is no string: the alert is refused, its neighbour enqueued, and the answer can be written
    (the label's name was put raw into the error, which no UTF-8 encoder takes: a 500, after
    the neighbour's XADD, so Alertmanager would re-send the group for ever)."""
    good = alert("a1bc48475b20e73d", {"alertname": "Down", "service": "checkout"})
    bad = alert("c2ea85182f28cbd9", {"alertname": "Down", "service": "cart", "\ud800": 1})
    async with serving() as client:
        response = await client.post(
            "/sources/alertmanager",
            content=raw_json(notification(good, bad)),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert [item["id"] for item in answer["accepted"]] == enqueued_ids(sync_redis, keys)
    [refused] = answer["refused"]
    assert "must be a string" in refused["detail"]
    assert "\\ud800" in refused["detail"]  # named, escaped


@pytest.mark.anyio
async def test_github_deployment_id_no_utf8_can_hold_in_an_ignored_status_is_not_a_500(
    serving: Serving,
) -> None:
    """A ``deployment.id`` given as a string with a lone surrogate, on a status that is
    ignored: the answer names it escaped (it was put raw into ``what``: a 500)."""
    document = load("github_deployment_status_in_progress.json")
    document["deployment"]["id"] = "12\ud800" + "9" * 500
    body = raw_json(document)
    signature = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with serving() as client:
        response = await client.post(
            "/sources/github",
            content=body,
            headers={
                "X-Hub-Signature-256": f"sha256={signature}",
                "X-GitHub-Event": "deployment_status",
                "Content-Type": "application/json",
            },
        )
    assert response.status_code == 200, response.text
    [ignored] = response.json()["ignored"]
    assert "\\ud800" in ignored["what"]
    assert len(ignored["what"]) < 200  # cut short, not the whole id


@pytest.mark.anyio
async def test_gitlab_deployment_id_no_utf8_can_hold_in_an_ignored_status_is_not_a_500(
    serving: Serving,
) -> None:
    document = load("gitlab_deployment_success.json")
    document["status"] = "failed"
    document["deployment_id"] = "15\ud800"
    async with serving() as client:
        response = await client.post(
            "/sources/gitlab",
            content=raw_json(document),
            headers={
                "X-Gitlab-Token": GITLAB_TOKEN,
                "X-Gitlab-Event": DEPLOYMENT_HOOK,
                "Content-Type": "application/json",
            },
        )
    assert response.status_code == 200, response.text
    [ignored] = response.json()["ignored"]
    assert "\\ud800" in ignored["what"]


# --- a long title is not a lost incident ------------------------------------------------------


def test_alert_whose_summary_makes_a_name_too_long_is_an_incident_with_the_name_cut() -> None:
    """alertname + ': ' + summary past the name's limit: the incident is kept with its name
    cut short (the alert was refused: an incident lost for a cosmetic field)."""
    summary = "s" * 2_000
    labels = {"alertname": "HighLatency", "service": "checkout"}
    mapped = map_notification(
        notification(alert("a1bc48475b20e73d", labels, annotations={"summary": summary})),
        DEFAULTS.alertmanager,
    )
    assert mapped.refused == []
    [event] = mapped.events
    name = event.attributes()["name"]
    assert len(name) == MAX_TEXT_CHARS
    assert name.startswith("HighLatency: sss")
    assert name.endswith("...")


def test_pagerduty_title_past_the_name_limit_is_an_incident_with_the_name_cut() -> None:
    """PagerDuty titles may be longer than the forwarder's name limit (an Events API v2
    summary may have 1,024 characters). A 4xx is dropped by PagerDuty without a retry, and
    three in a row disable the webhook for 24 hours: the title is cut, not the incident."""
    document = load("pagerduty_incident_triggered.json")
    document["event"]["data"]["title"] = "T" * 1_024
    [event] = map_webhook(document, DEFAULTS.pagerduty).events
    assert event.attributes()["name"] == "T" * (MAX_TEXT_CHARS - 3) + "..."


def test_name_within_the_limit_is_kept_whole() -> None:
    document = load("pagerduty_incident_triggered.json")
    document["event"]["data"]["title"] = "T" * MAX_TEXT_CHARS
    [event] = map_webhook(document, DEFAULTS.pagerduty).events
    assert event.attributes()["name"] == "T" * MAX_TEXT_CHARS


# --- alerts Alertmanager left out are said, not silently lost ---------------------------------


def test_truncated_alerts_are_named_in_the_answer() -> None:
    """``max_alerts`` in the webhook config makes Alertmanager send only the first alerts of
    a group and count the rest in ``truncatedAlerts``: those incidents never arrive, so the
    answer (and the log) says how many were left out and why."""
    labels = {"alertname": "Down", "service": "checkout"}
    mapped = map_notification(
        notification(alert("a1bc48475b20e73d", labels), truncatedAlerts=7), DEFAULTS.alertmanager
    )
    assert len(mapped.events) == 1
    [ignored] = mapped.ignored
    assert ignored.what == "7 alerts Alertmanager left out of this notification"
    assert "max_alerts" in ignored.reason


@pytest.mark.parametrize("count", [0, None, "3", -1, True])
def test_truncated_alerts_absent_zero_or_odd_say_nothing(count: object) -> None:
    labels = {"alertname": "Down", "service": "checkout"}
    mapped = map_notification(
        notification(alert("a1bc48475b20e73d", labels), truncatedAlerts=count),
        DEFAULTS.alertmanager,
    )
    assert (len(mapped.events), mapped.ignored, mapped.refused) == (1, [], [])


# --- ids: stable across re-sends, distinct between deployments --------------------------------


def test_github_and_gitlab_ids_are_the_same_for_an_integer_and_its_text() -> None:
    """GitHub and GitLab send their ids as integers; the same id given as text (a relay
    that re-encodes, a hand re-send) is the same deployment, not a new one."""

    def github_id(deployment_id: object) -> str:
        document = load("github_deployment_status_success.json")
        document["deployment"]["id"] = deployment_id
        [event] = map_event("deployment_status", document, DEFAULTS.github).events
        return event.event_id

    def gitlab_id(deployment_id: object) -> str:
        document = load("gitlab_deployment_success.json")
        document["deployment_id"] = deployment_id
        status = read_status(DEPLOYMENT_HOOK, document, DEFAULTS.gitlab)
        assert not isinstance(status, Mapped)
        return status.deployment_key

    assert github_id(145988746) == github_id("145988746")
    assert gitlab_id(15) == gitlab_id("15")


@pytest.mark.anyio
async def test_truncated_alerts_are_a_warning_in_the_log(
    serving: Serving, caplog: pytest.LogCaptureFixture
) -> None:
    """Alertmanager reads no answer: the alerts it left out are a WARNING for the operator."""
    labels = {"alertname": "Down", "service": "checkout"}
    body = notification(alert("a1bc48475b20e73d", labels), truncatedAlerts=2)
    async with serving() as client:
        response = await client.post(
            "/sources/alertmanager",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert response.status_code == 202, response.text
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [m for m in warnings if "2 alerts Alertmanager left out" in m and "max_alerts" in m]


# --- GitLab: a running and a success handled at once --------------------------------------------


def gitlab_headers() -> dict[str, str]:
    return {
        "X-Gitlab-Token": GITLAB_TOKEN,
        "X-Gitlab-Event": DEPLOYMENT_HOOK,
        "Content-Type": "application/json",
    }


@pytest.mark.anyio
async def test_gitlab_running_joined_while_its_success_is_in_flight_leaves_the_true_start_last(
    serving: Serving,
    sync_redis: redis.Redis,
    keys: RedisKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ``success`` arrives first and finds no ``running``: its deployment starts when it
    finished. Between its join and its XADD, another ``serve`` (or another task of this one)
    handles the ``running``, finds both, and enqueues the deployment with its true start. The
    entry enqueued last must be the one with the true start: the workers keep the last
    writer's ``started_at``, so the fallback enqueued after it would hide the true start."""
    running = load("gitlab_deployment_running.json")
    running_status = read_status(DEPLOYMENT_HOOK, running, DEFAULTS.gitlab)
    assert not isinstance(running_status, Mapped)
    success = load("gitlab_deployment_success.json")
    success_status = read_status(DEPLOYMENT_HOOK, success, DEFAULTS.gitlab)
    assert not isinstance(success_status, Mapped)
    real_deployment = gitlab_module.deployment
    raced: list[bool] = []

    def other_serve_handles_the_running_meanwhile(*args: Any) -> Any:
        if not raced:  # once, as the other process would: its join and its XADD
            raced.append(True)
            key = keys.gitlab_prefix + running_status.deployment_key
            sync_redis.hsetnx(key, gitlab_module.RUNNING, running_status.at_ns)
            joined = real_deployment(running_status, running_status.at_ns, success_status.at_ns)
            streams.add(sync_redis, keys.ingest, streams.entry_fields(joined))
        return real_deployment(*args)

    monkeypatch.setattr(gitlab_module, "deployment", other_serve_handles_the_running_meanwhile)
    async with serving() as client:
        response = await client.post(
            "/sources/gitlab", content=json.dumps(success).encode(), headers=gitlab_headers()
        )
    assert response.status_code == 202, response.text
    assert raced
    last = decode_entry(streams.entries(sync_redis, keys.ingest)[-1][1])
    assert last.attributes()["started_at"] == running_status.at_ns
    assert last.attributes()["finished_at"] == success_status.at_ns


@pytest.mark.anyio
async def test_gitlab_success_then_running_then_both_again_enqueue_the_true_start_once_known(
    serving: Serving, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """In order, out of order, repeated: each answer says what it did, and from the moment
    both are known every entry carries the running's start."""
    running = load("gitlab_deployment_running.json")
    success = load("gitlab_deployment_success.json")
    async with serving() as client:
        answers = [
            await client.post(
                "/sources/gitlab", content=json.dumps(document).encode(), headers=gitlab_headers()
            )
            for document in (success, running, success, running)
        ]
    assert [answer.status_code for answer in answers] == [202, 202, 202, 202]
    starts = [
        decode_entry(fields).attributes()["started_at"]
        for _, fields in streams.entries(sync_redis, keys.ingest)
    ]
    running_ns = 1619639100 * 10**9  # 2021-04-28 21:45:00 +0200
    success_ns = 1619639400 * 10**9  # 2021-04-28 21:50:00 +0200
    assert starts == [success_ns, running_ns, running_ns, running_ns]
