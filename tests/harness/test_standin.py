"""The DORA API stand-in answers, validates, records and misbehaves as documented."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.stack import REPO, wait_until
from harness.standin import StandinServer

API_KEY = "test-api-key"
PERIOD_S = 3600
# The server's wall clock is pinned 42 s before the end of a rate-limit window.
WINDOW = 472_222
NOW = (WINDOW + 1) * PERIOD_S - 42.0
STARTED_NS = 1_693_491_974_000_000_000
SHA = "66adc9350f2cc9b250b69abddab733dd55e1a588"


def failure(**attributes: Any) -> dict[str, Any]:
    base = {"id": "incident-0000000001", "started_at": STARTED_NS, "services": ["shopist"]}
    return {"data": {"attributes": {**base, **attributes}}}


def without(body: dict[str, Any], field: str) -> dict[str, Any]:
    attributes = dict(body["data"]["attributes"])
    del attributes[field]
    return {"data": {"attributes": attributes}}


@pytest.fixture(scope="module")
def server() -> Iterator[StandinServer]:
    with StandinServer(API_KEY, wall_clock=lambda: NOW) as standin:
        yield standin


@pytest.fixture
def api(server: StandinServer) -> Iterator[httpx.Client]:
    server.reset()
    with httpx.Client(base_url=server.url, headers={"DD-API-KEY": API_KEY}) as client:
        yield client


def test_valid_failure_is_accepted_and_recorded(api: httpx.Client, server: StandinServer) -> None:
    """A valid failure gets 202, its id echoed back, and lands in `latest`."""
    body = failure(finished_at=STARTED_NS + 10**9, git={"repository_url": "u", "commit_sha": SHA})
    response = api.post("/api/v2/dora/failure", json=body)
    assert response.status_code == 202
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    assert response.json() == {"data": {"id": "incident-0000000001", "type": "dora_failure"}}
    assert server.latest() == {"incident-0000000001": body["data"]["attributes"]}
    [record] = server.requests()
    assert (record.path, record.status, record.headers["DD-API-KEY"]) == (
        "/api/v2/dora/failure",
        202,
        API_KEY,
    )
    assert server.status_counts() == {202: 1}


def test_same_id_replaces_the_previous_event(api: httpx.Client, server: StandinServer) -> None:
    """Re-sending an id (here through the legacy /incident path) upserts it."""
    api.post("/api/v2/dora/failure", json=failure())
    resolved = failure(finished_at=STARTED_NS // 10**9 + 60)  # seconds vs nanoseconds
    assert api.post("/api/v2/dora/incident", json=resolved).status_code == 202
    assert server.latest() == {"incident-0000000001": resolved["data"]["attributes"]}


def test_failure_without_id_gets_a_uuid(api: httpx.Client, server: StandinServer) -> None:
    """Without an id the answer carries a fresh uuid4, which keys `latest`."""
    response = api.post("/api/v2/dora/failure", json=without(failure(team="backend"), "id"))
    event_id = response.json()["data"]["id"]
    assert uuid.UUID(event_id).version == 4
    assert list(server.latest()) == [event_id]


@pytest.mark.parametrize("headers", [{"DD-API-KEY": "wrong"}, {}], ids=["wrong", "missing"])
def test_bad_api_key_is_forbidden(
    api: httpx.Client, server: StandinServer, headers: dict[str, str]
) -> None:
    """A wrong or missing DD-API-KEY gets 403 {"errors": ["Forbidden"]}."""
    del api.headers["DD-API-KEY"]
    response = api.post("/api/v2/dora/failure", json=failure(), headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"errors": ["Forbidden"]}
    assert server.latest() == {}


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        pytest.param(
            failure(git={"repository_url": "u", "commit_sha": "66adc93"}),
            "/data/attributes/git/commit_sha",
            id="short-commit-sha",
        ),
        pytest.param(failure(id="too-short"), "/data/attributes/id", id="short-id"),
        pytest.param(failure(id="has spaces in it....."), "/data/attributes/id", id="bad-id"),
        pytest.param(
            without(failure(), "started_at"), "/data/attributes/started_at", id="no-started_at"
        ),
        pytest.param(
            without(failure(), "services"), "/data/attributes/services", id="no-services-nor-team"
        ),
        pytest.param(
            failure(services=[]), "/data/attributes/services", id="empty-services-no-team"
        ),
        pytest.param(
            failure(finished_at=STARTED_NS // 10**6 - 1),  # milliseconds vs nanoseconds
            "/data/attributes/finished_at",
            id="finished-before-started",
        ),
        pytest.param(failure(started_at="now"), "/data/attributes/started_at", id="string-time"),
        pytest.param({"data": {}}, "/data/attributes", id="no-attributes"),
    ],
)
def test_invalid_failure_is_a_bad_request(
    api: httpx.Client, server: StandinServer, body: dict[str, Any], pointer: str
) -> None:
    """An invalid failure gets a JSON:API 400 whose pointer names the offending field."""
    response = api.post("/api/v2/dora/failure", json=body)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["status"], error["title"], error["source"]) == (
        "400",
        "Bad Request",
        {"pointer": pointer},
    )
    assert error["detail"]
    assert server.latest() == {}
    assert server.status_counts() == {400: 1}


def test_non_json_body_is_a_bad_request(api: httpx.Client, server: StandinServer) -> None:
    """A body that is not JSON gets a 400 pointing at the whole document."""
    response = api.post("/api/v2/dora/failure", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"pointer": ""}
    assert server.requests()[0].attributes is None


def test_deployment_endpoint(api: httpx.Client, server: StandinServer) -> None:
    """Deployments validate against their own schema and answer type dora_deployment."""
    attributes = {
        "id": "deploy-00000000001",
        "service": "shopist",
        "started_at": STARTED_NS,
        "finished_at": STARTED_NS + 1,
    }
    response = api.post("/api/v2/dora/deployment", json={"data": {"attributes": attributes}})
    assert response.json() == {"data": {"id": "deploy-00000000001", "type": "dora_deployment"}}
    assert server.latest("dora_deployment") == {"deploy-00000000001": attributes}
    del attributes["finished_at"]
    response = api.post("/api/v2/dora/deployment", json={"data": {"attributes": attributes}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"pointer": "/data/attributes/finished_at"}


def test_respond_next_forces_statuses(api: httpx.Client, server: StandinServer) -> None:
    """respond_next answers the next N POSTs with the status, then normal service resumes."""
    server.respond_next(503, count=2)
    server.respond_next(429, headers={"X-RateLimit-Reset": "7"}, body="<html>slow down</html>")
    statuses = [api.post("/api/v2/dora/failure", json=failure()) for _ in range(4)]
    assert [r.status_code for r in statuses] == [503, 503, 429, 202]
    assert statuses[0].json() == {"errors": ["Service Unavailable"]}
    assert (statuses[2].text, statuses[2].headers["x-ratelimit-reset"]) == (
        "<html>slow down</html>",
        "7",
    )
    assert server.status_counts() == {503: 2, 429: 1, 202: 1}


def test_respond_always_until_cleared(api: httpx.Client) -> None:
    """respond_always answers every POST, valid or not, until cleared with None."""
    api.post("/_standin/behaviour", json={"respond_always": 500})
    assert api.post("/api/v2/dora/failure", json=failure()).status_code == 500
    assert api.post("/api/v2/dora/failure", content=b"junk").status_code == 500
    api.post("/_standin/behaviour", json={"respond_always": None})
    assert api.post("/api/v2/dora/failure", json=failure()).status_code == 202


def test_drop_next_closes_the_connection(api: httpx.Client, server: StandinServer) -> None:
    """drop_next makes the client see a network error, recorded as status 0, in queue order."""
    server.respond_next(503)
    server.drop_next()
    assert api.post("/api/v2/dora/failure", json=failure()).status_code == 503
    with pytest.raises(httpx.TransportError):
        api.post("/api/v2/dora/failure", json=failure())
    assert api.post("/api/v2/dora/failure", json=failure()).status_code == 202
    assert [r.status for r in server.requests()] == [503, 0, 202]
    assert server.latest() == {"incident-0000000001": failure()["data"]["attributes"]}


def test_apply_late_applies_a_request_its_client_gave_up_on(
    api: httpx.Client, server: StandinServer
) -> None:
    """apply_late holds a request past the client's timeout, then applies it after newer ones."""
    server.apply_late(1, hold_s=0.5)
    with pytest.raises(httpx.TimeoutException):
        api.post("/api/v2/dora/failure", json=failure(), timeout=0.1)
    resolved = failure(finished_at=STARTED_NS + 10**9)
    assert api.post("/api/v2/dora/failure", json=resolved).status_code == 202
    assert server.latest() == {"incident-0000000001": resolved["data"]["attributes"]}
    assert server.late() == (1, 0)
    wait_until(lambda: server.late() == (0, 1), timeout_s=10, what="the held request applied")
    assert server.latest() == {"incident-0000000001": failure()["data"]["attributes"]}
    assert server.regressions() == ["incident-0000000001"]
    assert api.get("/_standin/state").json()["applied_late"] == 1


def test_rate_limit_headers_and_429(api: httpx.Client, server: StandinServer) -> None:
    """Within the limit answers carry X-RateLimit-*; past it they are 429s, counted per window."""
    server.rate_limit(2, PERIOD_S)
    responses = [api.post("/api/v2/dora/failure", json=failure()) for _ in range(4)]
    assert [r.status_code for r in responses] == [202, 202, 429, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["1", "0", "0", "0"]
    headers = responses[2].headers
    assert (headers["x-ratelimit-limit"], headers["x-ratelimit-period"]) == ("2", "3600")
    assert (headers["x-ratelimit-reset"], headers["x-ratelimit-name"]) == ("42", "dora_failure")
    assert responses[2].json() == {"errors": ["Too many requests"]}
    assert server.throttled_per_window() == {WINDOW: 2}
    other = api.post("/api/v2/dora/deployment", json={})
    assert "x-ratelimit-limit" not in other.headers


def test_rate_limit_headers_on_errors_and_duplicated_reset(
    api: httpx.Client, server: StandinServer
) -> None:
    """Every answer of a limited endpoint has the headers; Reset can come twice."""
    server.rate_limit(5, PERIOD_S, duplicate_reset_header=True)
    forbidden = api.post("/api/v2/dora/failure", json=failure(), headers={"DD-API-KEY": "no"})
    invalid = api.post("/api/v2/dora/failure", json={})
    assert (forbidden.status_code, invalid.status_code) == (403, 400)
    assert forbidden.headers["x-ratelimit-remaining"] == "5"  # unauthorised: not counted
    assert invalid.headers.get_list("x-ratelimit-reset") == ["42", "42"]


def test_latency_delays_answers(api: httpx.Client, server: StandinServer) -> None:
    """latency_s delays every DORA answer by at least that long."""
    server.latency_s = 0.05
    started = time.monotonic()
    api.post("/api/v2/dora/failure", json=failure())
    assert time.monotonic() - started >= 0.05
    assert server.requests()[0].received_at <= started + 0.05


def test_control_endpoints(api: httpx.Client) -> None:
    """/_standin/behaviour sets behaviours, /_standin/state reports, /_standin/reset clears."""
    settings = {"respond_next": {"status": 503, "count": 1}, "rate_limit": {"limit": 9}}
    assert api.post("/_standin/behaviour", json=settings).status_code == 200
    api.post("/api/v2/dora/failure", json=failure())
    api.post("/api/v2/dora/failure", json=failure())
    state = api.get("/_standin/state").json()
    assert state["requests"] == 2
    assert state["status_counts"] == {"202": 1, "503": 1}
    assert list(state["latest"]["dora_failure"]) == ["incident-0000000001"]
    assert state["rate_limits"] == {"dora_failure": [9, 60]}
    assert api.post("/_standin/behaviour", json={"bogus": 1}).status_code == 400
    reset = api.post("/_standin/reset").json()
    assert (reset["requests"], reset["rate_limits"]) == (0, {})


def test_stop_leaves_no_thread() -> None:
    """Stopping joins the server's thread; a stopped server refuses connections."""
    before = set(threading.enumerate())
    with StandinServer(API_KEY) as standin:
        assert len(set(threading.enumerate()) - before) == 1
    assert set(threading.enumerate()) == before
    with pytest.raises(httpx.ConnectError):
        httpx.get(standin.url + "/_standin/state")


def test_subprocess_mode() -> None:
    """`python -m harness.standin` announces its URL and serves the same API."""
    command = [sys.executable, "-m", "harness.standin", "--port", "0", "--api-key", API_KEY]
    with subprocess.Popen(
        # A window of 10**9 s cannot roll over mid-test (the next boundary is in 2033).
        [*command, "--rate-limit", "1/1000000000"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        try:
            line = process.stdout.readline()
            url = line.removeprefix("stand-in DORA API listening on ").strip()
            assert url.startswith("http://127.0.0.1:")
            with httpx.Client(base_url=url, headers={"DD-API-KEY": API_KEY}) as client:
                statuses = [
                    client.post("/api/v2/dora/failure", json=failure()).status_code
                    for _ in range(2)
                ]
                state = client.get("/_standin/state").json()
        finally:
            process.terminate()
    assert statuses == [202, 429]
    assert state["status_counts"] == {"202": 1, "429": 1}
    assert process.returncode == 0


def test_regressions_lists_start_only_states_after_a_finish() -> None:
    """An accepted start-only body after the same id's finish is reported; others are not."""
    with StandinServer("k") as server, httpx.Client(base_url=server.url) as client:
        start = {"id": "incident-0000000001", "started_at": 1_700_000_000, "team": "t"}
        finish = {**start, "finished_at": 1_700_000_100}
        for attributes in (start, finish, start):
            response = client.post(
                "/api/v2/dora/failure",
                json={"data": {"attributes": attributes}},
                headers={"DD-API-KEY": "k"},
            )
            assert response.status_code == 202
        assert server.regressions() == ["incident-0000000001"]
