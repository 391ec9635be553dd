"""What the sources' answers carry beyond their status: the challenge of a 401, the media
types a JSON body may be labelled with, and how loud one bad item among many is."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.ingest.sources.support import deliver, payload
from workers.ingest.sources.endpoints import MAX_ITEM_LINES

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_env", "no_secret_logged")]


@pytest.mark.parametrize(
    ("source", "challenge"),
    [
        ("alertmanager", "Bearer"),
        ("pagerduty", "X-PagerDuty-Signature"),
        ("github", "X-Hub-Signature-256"),
        ("gitlab", "X-Gitlab-Token"),
    ],
)
async def test_a_401_names_the_proof_it_wants(
    http: httpx.AsyncClient, source: str, challenge: str
) -> None:
    """RFC 9110: a 401 carries WWW-Authenticate; here, the scheme or the signing header."""
    response = await deliver(http, source, {}, signed=False)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "application/vnd.api+json", "text/plain", "TEXT/JSON"],
)
async def test_json_under_any_json_label_is_taken(
    http: httpx.AsyncClient, content_type: str
) -> None:
    response = await deliver(
        http,
        "github",
        payload("github_ping"),
        {"Content-Type": content_type, "X-GitHub-Event": "ping"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/html"])
async def test_other_media_types_are_415(http: httpx.AsyncClient, content_type: str) -> None:
    response = await deliver(
        http,
        "github",
        payload("github_ping"),
        {"Content-Type": content_type, "X-GitHub-Event": "ping"},
    )
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["errors"][0]


def _alert(number: int, starts_at: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": f"A{number}", "service": "api"},
        "annotations": {},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"{number:016x}",
    }


async def test_many_bad_alerts_write_a_bounded_number_of_lines(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """One good alert and 50 bad: the good one is enqueued, the answer names all 50, the
    log names the first few and counts the rest in one line."""
    bad = [_alert(n, "not a time") for n in range(1, 51)]
    notification = {"version": "4", "alerts": [_alert(0, "2026-12-04T10:00:00Z"), *bad]}
    with caplog.at_level(logging.WARNING, logger="dora_forwarder.sources"):
        response = await deliver(http, "alertmanager", notification)
    assert response.status_code == 202, response.text
    assert len(response.json()["accepted"]) == 1
    assert len(response.json()["refused"]) == 50
    lines = [r.getMessage() for r in caplog.records if r.name == "dora_forwarder.sources"]
    assert len(lines) == MAX_ITEM_LINES + 1
    assert lines[-1].endswith(
        f"refused {50 - MAX_ITEM_LINES} more item(s) (the answer lists them all)"
    )
