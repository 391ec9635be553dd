"""The DORA API stand-in's PATCH and DELETE operations: keys, bodies, effects and records."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.stack import REPO, wait_until
from harness.standin import StandinServer

API_KEY = "test-api-key"
APP_KEY = "test-app-key"
KEYS = {"DD-API-KEY": API_KEY, "DD-APPLICATION-KEY": APP_KEY}
STARTED_NS = 1_693_491_974_000_000_000
DEPLOYMENT = "deploy-00000000001"
INCIDENT = "incident-0000000001"
PATCH_TYPE = "dora_deployment_patch_request"


def deployment(event_id: str = DEPLOYMENT, **attributes: Any) -> dict[str, Any]:
    base = {
        "id": event_id,
        "service": "shopist",
        "env": "prod",
        "version": "v1.2.3",
        "started_at": STARTED_NS,
        "finished_at": STARTED_NS + 10**9,
    }
    return {"data": {"attributes": {**base, **attributes}}}


def patch(event_id: str = DEPLOYMENT, **attributes: Any) -> dict[str, Any]:
    fields = {"change_failure": True, **attributes}
    return {"data": {"id": event_id, "type": PATCH_TYPE, "attributes": fields}}


def by_version(**attributes: Any) -> dict[str, Any]:
    fields = {"change_failure": True, "service": "shopist", "env": "prod", "version": "v1.2.3"}
    return {"data": {"type": PATCH_TYPE, "attributes": {**fields, **attributes}}}


@pytest.fixture(scope="module")
def server() -> Iterator[StandinServer]:
    with StandinServer(API_KEY, app_key=APP_KEY) as standin:
        yield standin


@pytest.fixture
def api(server: StandinServer) -> Iterator[httpx.Client]:
    server.reset()
    with httpx.Client(base_url=server.url, headers=KEYS) as client:
        yield client


def post_deployment(api: httpx.Client, event_id: str = DEPLOYMENT, **attributes: Any) -> None:
    response = api.post("/api/v2/dora/deployment", json=deployment(event_id, **attributes))
    assert response.status_code == 202


def post_incident(api: httpx.Client, **attributes: Any) -> None:
    fields = {"id": INCIDENT, "started_at": STARTED_NS, "team": "ops", **attributes}
    response = api.post("/api/v2/dora/failure", json={"data": {"attributes": fields}})
    assert response.status_code == 202


def write(api: httpx.Client, method: str, path: str, body: Any = None) -> httpx.Response:
    return api.request(method, path, json=body)


OPERATIONS = [
    pytest.param("PATCH", f"/api/v2/dora/deployments/{DEPLOYMENT}", patch(), id="patch"),
    pytest.param("PATCH", "/api/v2/dora/deployments", by_version(), id="patch-by-version"),
    pytest.param("DELETE", f"/api/v2/dora/deployment/{DEPLOYMENT}", None, id="delete-deployment"),
]


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
@pytest.mark.parametrize(
    "headers",
    [
        {"DD-API-KEY": API_KEY},
        {"DD-API-KEY": API_KEY, "DD-APPLICATION-KEY": "wrong"},
        {"DD-APPLICATION-KEY": APP_KEY},
        {"DD-API-KEY": "wrong", "DD-APPLICATION-KEY": APP_KEY},
    ],
    ids=["no-app-key", "wrong-app-key", "no-api-key", "wrong-api-key"],
)
def test_operations_need_both_keys(
    api: httpx.Client,
    server: StandinServer,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    """PATCH and DELETE without the API key and the application key get 403, change nothing."""
    post_deployment(api)
    before = server.latest("dora_deployment")
    api.headers.clear()
    response = api.request(method, path, json=body, headers=headers)
    assert response.status_code == 403
    assert response.json() == {"errors": ["Forbidden"]}
    assert server.latest("dora_deployment") == before


def test_posts_need_no_application_key(api: httpx.Client, server: StandinServer) -> None:
    """The POSTs still take the API key alone."""
    del api.headers["DD-APPLICATION-KEY"]
    post_deployment(api)
    assert list(server.latest("dora_deployment")) == [DEPLOYMENT]


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
def test_unknown_event_is_not_found(
    api: httpx.Client, server: StandinServer, method: str, path: str, body: Any
) -> None:
    """An operation on an id the stand-in does not hold gets 404 and is recorded as such."""
    post_deployment(api, "deploy-00000000002", version="v9")
    response = write(api, method, path, body)
    assert response.status_code == 404
    assert response.json() == {"errors": ["Not Found"]}
    assert server.status_counts() == {202: 1, 404: 1}
    assert server.deleted("dora_deployment") == set()


def test_patch_sets_change_failure_and_remediation(
    api: httpx.Client, server: StandinServer
) -> None:
    """A PATCH of a known deployment answers 202 {"data": null} and is applied to it."""
    post_deployment(api)
    remediation = {"id": "deploy-00000000009", "type": "rollback"}
    response = api.patch(
        f"/api/v2/dora/deployments/{DEPLOYMENT}", json=patch(remediation=remediation)
    )
    assert response.status_code == 202
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    assert response.json() == {"data": None}
    expected = {
        **deployment()["data"]["attributes"],
        "change_failure": True,
        "remediation": remediation,
    }
    assert server.latest("dora_deployment") == {DEPLOYMENT: expected}
    # Field by field: a later PATCH without remediation keeps the earlier one.
    api.patch(f"/api/v2/dora/deployments/{DEPLOYMENT}", json=patch(change_failure=False))
    assert server.latest("dora_deployment")[DEPLOYMENT]["remediation"] == remediation
    assert server.latest("dora_deployment")[DEPLOYMENT]["change_failure"] is False
    assert server.requests()[0].attributes == deployment()["data"]["attributes"]


def test_remediation_by_version_is_accepted(api: httpx.Client, server: StandinServer) -> None:
    """Newer Datadog takes a remediation named by version instead of id."""
    post_deployment(api)
    remediation = {"version": "v1.2.4", "type": "rollforward"}
    response = api.patch(
        f"/api/v2/dora/deployments/{DEPLOYMENT}", json=patch(remediation=remediation)
    )
    assert response.status_code == 202
    assert server.latest("dora_deployment")[DEPLOYMENT]["remediation"] == remediation


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        pytest.param(patch("deploy-00000000002"), "/data/id", id="id-not-the-path's"),
        pytest.param(
            patch(remediation={"id": "deploy-00000000009", "version": "v2", "type": "rollback"}),
            "/data/attributes/remediation/version",
            id="remediation-id-and-version",
        ),
        pytest.param(
            patch(remediation={"id": "deploy-00000000009", "type": "revert"}),
            "/data/attributes/remediation/type",
            id="remediation-type",
        ),
        pytest.param(patch(change_failure="yes"), "/data/attributes/change_failure", id="bool"),
        pytest.param(
            {"data": {"id": DEPLOYMENT, "type": "dora_deployment", "attributes": {}}},
            "/data/type",
            id="data-type",
        ),
        pytest.param({"data": {"type": PATCH_TYPE, "attributes": {}}}, "/data/id", id="no-data-id"),
    ],
)
def test_invalid_patch_is_a_bad_request(
    api: httpx.Client, server: StandinServer, body: dict[str, Any], pointer: str
) -> None:
    """An invalid PATCH gets a JSON:API 400 naming the field, and changes nothing."""
    post_deployment(api)
    response = api.patch(f"/api/v2/dora/deployments/{DEPLOYMENT}", json=body)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["status"], error["source"]) == ("400", {"pointer": pointer})
    assert "change_failure" not in server.latest("dora_deployment")[DEPLOYMENT]


def test_patch_by_version_updates_the_most_recently_finished(
    api: httpx.Client, server: StandinServer
) -> None:
    """Of the deployments with that service, env and version, the latest finish is patched."""
    finished_s = STARTED_NS // 10**9
    post_deployment(api, "deploy-00000000001", finished_at=STARTED_NS + 5 * 10**9)
    post_deployment(api, "deploy-00000000002", finished_at=finished_s + 10)  # seconds: latest
    post_deployment(api, "deploy-00000000003", finished_at=STARTED_NS + 2 * 10**9)
    post_deployment(api, "deploy-00000000004", env="staging", finished_at=finished_s + 99)
    post_deployment(api, "deploy-00000000005", version="v2", finished_at=finished_s + 99)
    remediation = {"version": "v1.2.4", "type": "rollforward"}
    response = api.patch("/api/v2/dora/deployments", json=by_version(remediation=remediation))
    assert (response.status_code, response.json()) == (202, {"data": None})
    patched = {
        event_id
        for event_id, attributes in server.latest("dora_deployment").items()
        if "change_failure" in attributes
    }
    assert patched == {"deploy-00000000002"}
    latest = server.latest("dora_deployment")["deploy-00000000002"]
    assert (latest["change_failure"], latest["remediation"]) == (True, remediation)
    assert latest["env"] == "prod"
    assert server.requests()[-1].event_id == "deploy-00000000002"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        pytest.param(
            {"data": {"type": PATCH_TYPE, "attributes": {"change_failure": True}}},
            "/data/attributes/env",
            id="no-selector",
        ),
        pytest.param(
            by_version(change_failure=None), "/data/attributes/change_failure", id="null-bool"
        ),
        pytest.param(
            by_version(remediation={"type": "rollback"}),
            "/data/attributes/remediation",
            id="remediation-unnamed",
        ),
        pytest.param(
            by_version(
                remediation={"id": "deploy-00000000009", "version": "v2", "type": "rollback"}
            ),
            "/data/attributes/remediation/version",
            id="remediation-id-and-version",
        ),
    ],
)
def test_invalid_patch_by_version_is_a_bad_request(
    api: httpx.Client, body: dict[str, Any], pointer: str
) -> None:
    """A PATCH by version needs change_failure, service, env, version; one remediation name."""
    post_deployment(api)
    response = api.patch("/api/v2/dora/deployments", json=body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"pointer": pointer}


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("dora_deployment", f"/api/v2/dora/deployment/{DEPLOYMENT}"),
        ("dora_failure", f"/api/v2/dora/failure/{INCIDENT}"),
    ],
)
def test_delete_removes_the_event(
    api: httpx.Client, server: StandinServer, kind: str, path: str
) -> None:
    """A DELETE answers 202 {"data": null}; the event leaves `latest`; a second one is 404."""
    post_deployment(api)
    post_incident(api)
    response = api.delete(path)
    assert (response.status_code, response.json()) == (202, {"data": None})
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    [event_id] = server.deleted(kind)
    assert event_id not in server.latest(kind)
    other = "dora_failure" if kind == "dora_deployment" else "dora_deployment"
    assert (len(server.latest(other)), server.deleted(other)) == (1, set())
    assert api.delete(path).status_code == 404


def test_requests_carry_method_path_and_event(api: httpx.Client, server: StandinServer) -> None:
    """Each record says what it did to which event, in the order the stand-in applied them."""
    post_deployment(api)
    post_deployment(api, "deploy-00000000002")
    api.patch(f"/api/v2/dora/deployments/{DEPLOYMENT}", json=patch())
    api.delete(f"/api/v2/dora/deployment/{DEPLOYMENT}")
    api.delete(f"/api/v2/dora/failure/{DEPLOYMENT}")  # another kind: no such incident
    trail = [(r.method, r.path, r.status) for r in server.requests_for(DEPLOYMENT)]
    assert trail == [
        ("POST", "/api/v2/dora/deployment", 202),
        ("PATCH", f"/api/v2/dora/deployments/{DEPLOYMENT}", 202),
        ("DELETE", f"/api/v2/dora/deployment/{DEPLOYMENT}", 202),
        ("DELETE", f"/api/v2/dora/failure/{DEPLOYMENT}", 404),
    ]
    assert len(server.requests_for(DEPLOYMENT, "dora_deployment")) == 3
    assert server.requests()[-2].attributes is None


def test_canned_answers_apply_to_every_route(api: httpx.Client, server: StandinServer) -> None:
    """respond_next, drop_next and respond_always answer PATCH and DELETE in one queue with
    the POSTs; what they answer is not applied."""
    server.respond_next(503)
    server.drop_next()
    server.respond_next(202)
    assert api.post("/api/v2/dora/deployment", json=deployment()).status_code == 503
    with pytest.raises(httpx.TransportError):
        api.post("/api/v2/dora/deployment", json=deployment())
    assert api.post("/api/v2/dora/deployment", json=deployment()).status_code == 202
    assert server.latest("dora_deployment") == {}  # the canned 202 applied nothing
    post_deployment(api)
    server.respond_next(500)
    server.drop_next()
    assert api.patch(f"/api/v2/dora/deployments/{DEPLOYMENT}", json=patch()).status_code == 500
    with pytest.raises(httpx.TransportError):
        api.delete(f"/api/v2/dora/deployment/{DEPLOYMENT}")
    assert server.latest("dora_deployment") == {DEPLOYMENT: deployment()["data"]["attributes"]}
    server.respond_always(503)
    assert api.patch("/api/v2/dora/deployments", json=by_version()).status_code == 503
    assert api.delete(f"/api/v2/dora/deployment/{DEPLOYMENT}").status_code == 503
    server.respond_always(None)
    assert api.patch(f"/api/v2/dora/deployments/{DEPLOYMENT}", json=patch()).status_code == 202
    statuses = [(r.method, r.status) for r in server.requests()]
    assert statuses == [
        ("POST", 503),
        ("POST", 0),
        ("POST", 202),
        ("POST", 202),
        ("PATCH", 500),
        ("DELETE", 0),
        ("PATCH", 503),
        ("DELETE", 503),
        ("PATCH", 202),
    ]


def test_rate_limits_of_the_operations(api: httpx.Client, server: StandinServer) -> None:
    """Both PATCHes share the limit dora_deployment_patch; the POSTs are not counted in it."""
    server.rate_limit(1, 3600, name="dora_deployment_patch")
    post_deployment(api)
    first = api.patch(f"/api/v2/dora/deployments/{DEPLOYMENT}", json=patch())
    second = api.patch("/api/v2/dora/deployments", json=by_version())
    assert (first.status_code, second.status_code) == (202, 429)
    assert second.headers["x-ratelimit-name"] == "dora_deployment_patch"
    assert sum(server.throttled_per_window("dora_deployment_patch").values()) == 1
    assert api.delete(f"/api/v2/dora/deployment/{DEPLOYMENT}").status_code == 202


def test_post_after_delete_is_a_resurrection(api: httpx.Client, server: StandinServer) -> None:
    """An accepted POST of an id after its accepted DELETE is reported, once per DELETE."""
    post_incident(api, finished_at=STARTED_NS + 10**9)
    post_deployment(api)
    api.delete(f"/api/v2/dora/failure/{INCIDENT}")
    post_incident(api)  # start-only after the finish: a new life, not a regression
    post_incident(api, finished_at=STARTED_NS + 10**9)
    api.delete(f"/api/v2/dora/failure/{INCIDENT}")
    post_incident(api)
    api.patch(f"/api/v2/dora/deployments/{DEPLOYMENT}", json=patch())
    assert server.resurrections() == [INCIDENT, INCIDENT]
    assert server.regressions() == []
    assert server.deleted() == {INCIDENT}
    assert INCIDENT in server.latest()


def test_a_post_applied_late_after_the_delete_is_a_resurrection(
    api: httpx.Client, server: StandinServer
) -> None:
    """A POST held past its client's timeout that lands after the DELETE brings the event back."""
    post_deployment(api)
    server.apply_late(1, hold_s=0.5)
    with pytest.raises(httpx.TimeoutException):
        api.post("/api/v2/dora/deployment", json=deployment(), timeout=0.1)
    assert api.delete(f"/api/v2/dora/deployment/{DEPLOYMENT}").status_code == 202
    wait_until(lambda: server.late() == (0, 1), timeout_s=10, what="the held request applied")
    assert server.resurrections() == [DEPLOYMENT]
    assert DEPLOYMENT in server.latest("dora_deployment")
    methods = [r.method for r in server.requests_for(DEPLOYMENT)]
    assert methods == ["POST", "DELETE", "POST"]


def test_operations_on_events_from_elsewhere_are_no_finding(
    api: httpx.Client, server: StandinServer
) -> None:
    """PATCH and DELETE of a preloaded event (never POSTed here) work and flag nothing."""
    server.preload("dora_deployment", DEPLOYMENT, deployment()["data"]["attributes"])
    server.preload("dora_failure", INCIDENT, {"started_at": STARTED_NS, "team": "ops"})
    assert api.patch(f"/api/v2/dora/deployments/{DEPLOYMENT}", json=patch()).status_code == 202
    assert api.delete(f"/api/v2/dora/deployment/{DEPLOYMENT}").status_code == 202
    assert api.delete(f"/api/v2/dora/failure/{INCIDENT}").status_code == 202
    assert (server.resurrections(), server.regressions()) == ([], [])
    assert (server.latest(), server.latest("dora_deployment")) == ({}, {})


def test_a_post_after_a_patch_replaces_the_patched_event(
    api: httpx.Client, server: StandinServer
) -> None:
    """A POST replaces the whole event, patch included (the strict reading of an upsert)."""
    post_deployment(api)
    api.patch(f"/api/v2/dora/deployments/{DEPLOYMENT}", json=patch())
    post_deployment(api)
    assert "change_failure" not in server.latest("dora_deployment")[DEPLOYMENT]
    assert server.regressions() == []


def test_control_endpoints_report_operations(api: httpx.Client) -> None:
    """/_standin/state reports deletions, resurrections and methods; /_standin/requests
    lists each request's method, path and id; /_standin/behaviour sets app_key and preload."""
    attributes = deployment()["data"]["attributes"]
    settings = {
        "app_key": "another-app-key",
        "preload": {"kind": "dora_deployment", "event_id": DEPLOYMENT, "attributes": attributes},
    }
    assert api.post("/_standin/behaviour", json=settings).status_code == 200
    path = f"/api/v2/dora/deployment/{DEPLOYMENT}"
    assert api.delete(path).status_code == 403
    assert api.delete(path, headers={"DD-APPLICATION-KEY": "another-app-key"}).status_code == 202
    post_deployment(api)
    state = api.get("/_standin/state").json()
    assert state["deleted"] == {"dora_deployment": [DEPLOYMENT], "dora_failure": []}
    assert state["resurrections"] == [DEPLOYMENT]
    assert state["requests_by_method"] == {"DELETE": 2, "POST": 1}
    rows = api.get("/_standin/requests").json()
    assert [(r["method"], r["path"], r["id"], r["status"]) for r in rows] == [
        ("DELETE", path, DEPLOYMENT, 403),
        ("DELETE", path, DEPLOYMENT, 202),
        ("POST", "/api/v2/dora/deployment", DEPLOYMENT, 202),
    ]
    reset = api.post("/_standin/reset").json()
    assert (reset["deleted"], reset["resurrections"]) == (
        {"dora_deployment": [], "dora_failure": []},
        [],
    )


def test_subprocess_mode_takes_an_application_key() -> None:
    """`python -m harness.standin --app-key K` checks PATCH and DELETE against K."""
    command = [sys.executable, "-m", "harness.standin", "--port", "0", "--api-key", API_KEY]
    with subprocess.Popen(
        [*command, "--app-key", APP_KEY], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        try:
            url = process.stdout.readline().removeprefix("stand-in DORA API listening on ")
            with httpx.Client(base_url=url.strip(), headers=KEYS) as client:
                statuses = [
                    client.delete(
                        f"/api/v2/dora/deployment/{DEPLOYMENT}", headers=headers
                    ).status_code
                    for headers in ({"DD-APPLICATION-KEY": "standin-app-key"}, {})
                ]
        finally:
            process.terminate()
    assert statuses == [403, 404]
    assert process.returncode == 0
