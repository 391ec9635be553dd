"""The ingest endpoint as producers see it: raw HTTP requests to a real ``serve``, real Redis.

One server for the module (its own key prefix); each test starts from an empty stream.
Servers whose Redis is down, or that serve TLS, get a process of their own.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from forwarder import to_event
from forwarder.protocol import KIND_DEPLOYMENT, RedisKeys
from harness import streams
from harness.serve import ServeProcess, serve_env
from harness.stack import REPO, delete_keys, wait_until

INGEST_KEY = f"ingest-key-{uuid.uuid4().hex}"
OTHER_INGEST_KEY = f"other-ingest-key-{uuid.uuid4().hex}"
DATADOG_KEY = f"datadog-key-{uuid.uuid4().hex}"
ALL_KEYS = (INGEST_KEY, OTHER_INGEST_KEY, DATADOG_KEY)
LIMIT_BYTES = 2048
FAILURE = "/api/v2/dora/failure"
DEPLOYMENT = "/api/v2/dora/deployment"
SHA = "66adc9350f2cc9b250b69abddab733dd55e1a588"
ATTRIBUTES: dict[str, Any] = {
    "id": "incident-ingest-000001",
    "started_at": 1_700_000_000,
    "services": ["checkout"],
    "env": "prod",
}
DEPLOYED: dict[str, Any] = {
    "id": "deployment-ingest-0001",
    "service": "checkout",
    "started_at": 1_700_000_000,
    "finished_at": 1_700_000_090,
    "env": "prod",
    "git": {"repository_url": "https://github.com/acme/checkout", "commit_sha": SHA},
}


def body_of(attributes: dict[str, Any]) -> bytes:
    return json.dumps({"data": {"attributes": attributes}}).encode()


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One ``serve`` for the module; afterwards its whole log is searched for every key."""
    prefix = f"test-ingest-{uuid.uuid4().hex[:12]}"
    env = serve_env(
        redis_url,
        prefix,
        # Whitespace around keys is ignored; the Datadog key is set, as on a real host.
        FORWARDER_INGEST_KEYS=f" {INGEST_KEY} ,{OTHER_INGEST_KEY} ",
        DD_API_KEY=DATADOG_KEY,
        FORWARDER_INGEST_MAX_BODY_BYTES=str(LIMIT_BYTES),
    )
    process = ServeProcess(env, tmp_path_factory.mktemp("serve") / "serve.log")
    process.wait_listening()
    yield process
    # uvicorn shuts down gracefully, then ends by the signal it caught, as a shell expects.
    assert process.stop() == -signal.SIGTERM
    delete_keys(redis_url, "{" + prefix + "}*")
    text = process.log()
    assert "Application shutdown complete" in text
    assert not [key for key in ALL_KEYS if key in text], "a key appeared in serve's log"


@pytest.fixture
def stream(server: ServeProcess, sync_redis: redis.Redis) -> str:
    """The server's ingest stream, emptied for this test."""
    name = RedisKeys(server.prefix).ingest
    sync_redis.delete(name)
    return name


def post(
    server: ServeProcess,
    content: Any,
    path: str = FAILURE,
    key: str | None = INGEST_KEY,
    **headers: str,
) -> httpx.Response:
    """A POST as curl sends it: the bytes given, only the headers given (no Content-Type)."""
    sent = {"DD-API-KEY": key} if key is not None else {}
    sent.update({name.replace("_", "-"): value for name, value in headers.items()})
    return httpx.post(server.url + path, content=content, headers=sent, timeout=10)


def entries(sync_redis: redis.Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in streams.entries(sync_redis, stream)]


# --- 202 -----------------------------------------------------------------------------------


def test_event_is_enqueued_once_and_its_given_id_returned(
    server: ServeProcess, stream: str, sync_redis: redis.Redis
) -> None:
    """202 with Datadog's body and the given id; exactly one entry, encoded as publish does."""
    response = post(server, body_of(ATTRIBUTES))
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/vnd.api+json"
    assert response.json() == {"data": {"id": "incident-ingest-000001", "type": "dora_failure"}}
    expected = streams.entry_fields(to_event(ATTRIBUTES))
    assert entries(sync_redis, stream) == [{k.encode(): v.encode() for k, v in expected.items()}]


def test_id_is_derived_when_none_is_given(
    server: ServeProcess, stream: str, sync_redis: redis.Redis
) -> None:
    """Without an id the answer carries the deterministic id the workers will send."""
    attributes = {k: v for k, v in ATTRIBUTES.items() if k != "id"}
    response = post(server, body_of(attributes))
    assert response.status_code == 202
    derived = to_event(attributes).incident_id
    assert derived.startswith("dora-")
    assert response.json()["data"]["id"] == derived
    (entry,) = entries(sync_redis, stream)
    assert json.loads(entry[b"event"])["id"] == derived


def test_legacy_incident_path_takes_the_same_body(
    server: ServeProcess, stream: str, sync_redis: redis.Redis
) -> None:
    """POST /api/v2/dora/incident enqueues a failure and answers type dora_failure."""
    response = post(server, body_of(ATTRIBUTES), path="/api/v2/dora/incident")
    assert response.status_code == 202
    assert response.json()["data"]["type"] == "dora_failure"
    assert [e[b"kind"] for e in entries(sync_redis, stream)] == [b"failure"]


def test_deployment_is_enqueued_as_a_deployment(
    server: ServeProcess, stream: str, sync_redis: redis.Redis
) -> None:
    """POST /api/v2/dora/deployment: 202 type dora_deployment, one entry of kind deployment."""
    response = post(server, body_of(DEPLOYED), path=DEPLOYMENT)
    assert response.status_code == 202
    assert response.json() == {"data": {"id": "deployment-ingest-0001", "type": "dora_deployment"}}
    expected = streams.entry_fields(to_event(DEPLOYED, KIND_DEPLOYMENT))
    assert expected["kind"] == "deployment"
    assert entries(sync_redis, stream) == [{k.encode(): v.encode() for k, v in expected.items()}]


def test_deployment_id_is_derived_when_none_is_given(
    server: ServeProcess, stream: str, sync_redis: redis.Redis
) -> None:
    """A deployment without an id gets the one derived from service + env + started_at."""
    attributes = {k: v for k, v in DEPLOYED.items() if k != "id"}
    response = post(server, body_of(attributes), path=DEPLOYMENT)
    assert response.status_code == 202
    derived = to_event(attributes, KIND_DEPLOYMENT).event_id
    assert response.json()["data"]["id"] == derived
    (entry,) = entries(sync_redis, stream)
    assert json.loads(entry[b"event"])["id"] == derived


def test_any_configured_key_any_header_case_any_content_type(
    server: ServeProcess, stream: str, sync_redis: redis.Redis
) -> None:
    """The second key (configured with spaces), a lower-case header and curl's form type work."""
    response = httpx.post(
        server.url + FAILURE,
        content=body_of(ATTRIBUTES),
        headers={
            "dd-api-key": OTHER_INGEST_KEY,
            "content-type": "application/x-www-form-urlencoded",  # curl -d's default
        },
    )
    assert response.status_code == 202
    assert len(entries(sync_redis, stream)) == 1


# --- 400 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "pointer", "detail"),
    [
        ({"started_at": "yesterday"}, "/data/attributes/started_at", "started_at: is not an"),
        ({"id": "short"}, "/data/attributes/id", "id: must be 16-128 characters"),
        ({"services": ["api", ""]}, "/data/attributes/services/1", "services[1]: String should"),
        (
            {"git": {"repository_url": "https://github.com/o/r", "commit_sha": "abc123"}},
            "/data/attributes/git/commit_sha",
            "git.commit_sha: must be a full commit SHA",
        ),
        (
            {"git": {"commit_sha": "a" * 40}},
            "/data/attributes/git/repository_url",
            "git.repository_url: is required",
        ),
        (
            {"finished_at": 1_699_999_999},
            "/data/attributes/finished_at",
            "finished_at: is before started_at",
        ),
        ({"services": None}, "/data/attributes/services", "services: either services or team"),
        ({"priority": "P1"}, "/data/attributes/priority", "priority: is not a field Datadog"),
    ],
)
def test_bad_field_is_a_400_pointing_at_it(
    server: ServeProcess,
    stream: str,
    sync_redis: redis.Redis,
    change: dict[str, Any],
    pointer: str,
    detail: str,
) -> None:
    """One JSON:API error naming the field and the reason, pointing at it; nothing enqueued."""
    attributes = {k: v for k, v in {**ATTRIBUTES, **change}.items() if v is not None}
    response = post(server, body_of(attributes))
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["status"] == "400"
    assert error["title"] == "Bad Request"
    assert error["detail"].startswith(detail)
    assert error["source"] == {"pointer": pointer}
    assert entries(sync_redis, stream) == []


@pytest.mark.parametrize(
    ("change", "pointer", "detail"),
    [
        ({"finished_at": None}, "/data/attributes/finished_at", "finished_at: is required"),
        ({"service": None}, "/data/attributes/service", "service: is required"),
        ({"services": ["x"]}, "/data/attributes/services", "services: is not a field Datadog"),
        ({"finished_at": 1}, "/data/attributes/finished_at", "finished_at: is before started"),
    ],
)
def test_bad_deployment_field_is_a_400_pointing_at_it(
    server: ServeProcess,
    stream: str,
    sync_redis: redis.Redis,
    change: dict[str, Any],
    pointer: str,
    detail: str,
) -> None:
    """Deployments are held to the deployment model: Datadog's required fields, no others."""
    attributes = {k: v for k, v in {**DEPLOYED, **change}.items() if v is not None}
    response = post(server, body_of(attributes), path=DEPLOYMENT)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["detail"].startswith(detail)
    assert error["source"] == {"pointer": pointer}
    assert entries(sync_redis, stream) == []


def test_every_bad_field_gets_its_own_error(server: ServeProcess) -> None:
    """Two bad fields: two errors, one per pointer."""
    attributes = {**ATTRIBUTES, "id": "short", "custom_tags": ["team:a", "no-colon"]}
    response = post(server, body_of(attributes))
    assert response.status_code == 400
    pointers = [e["source"]["pointer"] for e in response.json()["errors"]]
    assert pointers == ["/data/attributes/id", "/data/attributes/custom_tags/1"]


@pytest.mark.parametrize(
    ("content", "pointer", "detail"),
    [
        (b"started_at=1700000000", "", "the body is not valid JSON"),
        (b"", "", "the body is not valid JSON"),
        (json.dumps(ATTRIBUTES).encode(), "/data", "data: is required"),
        (json.dumps({"data": ATTRIBUTES}).encode(), "/data/attributes", "data.attributes: is"),
    ],
)
def test_body_without_datadogs_envelope_is_a_400(
    server: ServeProcess,
    stream: str,
    sync_redis: redis.Redis,
    content: bytes,
    pointer: str,
    detail: str,
) -> None:
    """Not JSON, or attributes without {"data": {"attributes": ...}}: refused, as by Datadog."""
    response = post(server, content)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["source"] == {"pointer": pointer}
    assert error["detail"].startswith(detail)
    assert entries(sync_redis, stream) == []


# --- 403 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("DD-API-KEY", "not-a-key-of-ours")],
        [("DD-API-KEY", DATADOG_KEY)],
        [("DD-API-KEY", INGEST_KEY[:-1])],
        [("DD-API-KEY", INGEST_KEY), ("DD-API-KEY", INGEST_KEY)],
        [("DD-APPLICATION-KEY", INGEST_KEY)],
    ],
    ids=["missing", "wrong", "datadog-key", "prefix", "twice", "app-key-header"],
)
def test_missing_or_wrong_key_is_forbidden(
    server: ServeProcess, stream: str, sync_redis: redis.Redis, headers: list[tuple[str, str]]
) -> None:
    """403 {"errors": ["Forbidden"]}, nothing enqueued, whatever the body."""
    response = httpx.post(server.url + FAILURE, content=body_of(ATTRIBUTES), headers=headers)
    assert response.status_code == 403
    assert response.json() == {"errors": ["Forbidden"]}
    assert entries(sync_redis, stream) == []


# --- 413, 415 ------------------------------------------------------------------------------


def test_declared_length_past_the_limit_is_refused_before_the_body(server: ServeProcess) -> None:
    """A Content-Length past the limit gets 413 at once: the server does not wait for the body."""
    head = (
        f"POST {FAILURE} HTTP/1.1\r\nHost: 127.0.0.1\r\nDD-API-KEY: {INGEST_KEY}\r\n"
        "Content-Length: 10000000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(head.encode())  # and not one byte of the 10 MB
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = connection.recv(4096)
            if not chunk:
                break
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {
        "errors": [f"Payload Too Large: the body exceeds {LIMIT_BYTES} bytes"]
    }


def test_chunked_body_past_the_limit_is_refused(
    server: ServeProcess, stream: str, sync_redis: redis.Redis
) -> None:
    """A chunked body (no Content-Length) is counted as it arrives: 413, nothing enqueued."""
    padding = "x" * LIMIT_BYTES
    body = body_of({**ATTRIBUTES, "name": padding})

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = post(server, chunks())
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert entries(sync_redis, stream) == []


def test_chunked_body_within_the_limit_is_taken(
    server: ServeProcess, stream: str, sync_redis: redis.Redis
) -> None:
    """The same chunked upload under the limit is enqueued: the count is of the whole body."""
    body = body_of(ATTRIBUTES)
    response = post(server, iter([body[:10], body[10:]]))
    assert response.status_code == 202
    assert len(entries(sync_redis, stream)) == 1


def test_compressed_body_is_refused_with_the_reason(server: ServeProcess) -> None:
    """A gzip Content-Encoding is 415 saying to send the body uncompressed."""
    response = post(server, body_of(ATTRIBUTES), content_encoding="gzip")
    assert response.status_code == 415
    assert "send the body uncompressed" in response.json()["errors"][0]


# --- 404, 405, health ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v2/dora/failures", "/api/v2/dora/failure/", "/api/v1/events", "/"]
)
def test_other_paths_are_404_in_json(server: ServeProcess, path: str) -> None:
    """Paths Datadog's write API does not have: 404 {"errors": ["Not Found"]}."""
    response = post(server, body_of(ATTRIBUTES), path=path)
    assert response.status_code == 404
    assert response.json() == {"errors": ["Not Found"]}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_in_json(server: ServeProcess, method: str) -> None:
    """Only POST writes: 405 {"errors": ["Method Not Allowed"]} with Allow: POST."""
    response = httpx.request(method, server.url + FAILURE, headers={"DD-API-KEY": INGEST_KEY})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"errors": ["Method Not Allowed"]}


def test_health_is_ok_while_redis_answers(server: ServeProcess) -> None:
    """GET /health is 200 without a key (for load balancers); a probe every few seconds
    writes no access line at INFO, while other requests do."""
    response = httpx.get(server.url + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    marker = f"/api/v2/dora/failure?after-health={uuid.uuid4().hex}"
    httpx.get(server.url + marker)  # a 405: an access line, after the probe's would be
    wait_until(lambda: marker in server.log(), timeout_s=10, what="the next access line")
    assert '"GET /health HTTP/1.1" 200' not in server.log()


# --- 503 -----------------------------------------------------------------------------------


@pytest.fixture
def silent_redis() -> Iterator[int]:
    """A port that accepts connections and never answers: a Redis that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # connections complete in the backlog; nothing reads them
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize("down", ["closed-port", "silent"])
def test_redis_down_is_503_with_retry_after(
    down: str, silent_redis: int, tmp_path: Path, prefix: str
) -> None:
    """Redis refused or timing out: 503 with Retry-After: 1, for the event and for /health."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    port = closed if down == "closed-port" else silent_redis
    env = serve_env(f"redis://127.0.0.1:{port}/0", prefix, FORWARDER_INGEST_KEYS=INGEST_KEY)
    process = ServeProcess(env, tmp_path / "serve.log").wait_listening()
    try:
        response = post(process, body_of(ATTRIBUTES))
        health = httpx.get(process.url + "/health", timeout=10)
    finally:
        process.stop()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"errors": ["Service Unavailable"]}
    assert health.status_code == 503
    assert health.headers["retry-after"] == "1"
    assert "Redis did not take the event" in process.log()
    assert INGEST_KEY not in process.log()


# --- logs ----------------------------------------------------------------------------------


def test_no_key_appears_in_the_log(server: ServeProcess) -> None:
    """Accepted, wrong, Datadog's and keys inside bodies: the log says why, never a key."""
    post(server, body_of(ATTRIBUTES))
    post(server, body_of(ATTRIBUTES), key=DATADOG_KEY)
    post(server, body_of(ATTRIBUTES), key=OTHER_INGEST_KEY + "x")
    post(server, body_of({**ATTRIBUTES, "name": 7, INGEST_KEY: DATADOG_KEY}))
    post(server, b"{" + INGEST_KEY.encode())
    text = server.log()
    assert "the Datadog API key itself" in text
    assert "a key that is not one of FORWARDER_INGEST_KEYS" in text
    assert "rejected POST /api/v2/dora/failure" in text
    assert not [key for key in ALL_KEYS if key in text]


# --- starting, TLS -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "FORWARDER_INGEST_KEYS is not set. Set it to one or more keys"),
        ({"FORWARDER_INGEST_KEYS": " , "}, "FORWARDER_INGEST_KEYS is not set"),
        (
            {"FORWARDER_INGEST_KEYS": f"a,{DATADOG_KEY}", "DD_API_KEY": DATADOG_KEY},
            "FORWARDER_INGEST_KEYS contains DD_API_KEY",
        ),
        (
            {"FORWARDER_INGEST_KEYS": INGEST_KEY, "FORWARDER_INGEST_TLS_CERTFILE": "c.pem"},
            "set both FORWARDER_INGEST_TLS_CERTFILE and FORWARDER_INGEST_TLS_KEYFILE",
        ),
    ],
    ids=["no-keys", "blank-keys", "datadog-key", "half-tls"],
)
def test_serve_refuses_to_start_and_says_what_to_set(
    redis_url: str, prefix: str, env: dict[str, str], message: str
) -> None:
    """Exit code 2 and a message naming the variable; the key itself is never printed."""
    result = subprocess.run(  # noqa: PLW1510 - the code is the point
        [sys.executable, "-m", "workers.cli", "serve"],
        env=serve_env(redis_url, prefix, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert DATADOG_KEY not in result.stderr + result.stdout


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_serves_https_with_its_own_certificate(
    redis_url: str, prefix: str, tmp_path: Path, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """With a certificate and key set, the endpoint speaks HTTPS (and verifies as 127.0.0.1)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    env = serve_env(
        redis_url,
        prefix,
        FORWARDER_INGEST_KEYS=INGEST_KEY,
        FORWARDER_INGEST_TLS_CERTFILE=str(cert),
        FORWARDER_INGEST_TLS_KEYFILE=str(key),
    )
    process = ServeProcess(env, tmp_path / "serve.log", scheme="https")
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
        process.wait_listening(client)
        try:
            response = client.post(
                process.url + FAILURE,
                content=body_of(ATTRIBUTES),
                headers={"DD-API-KEY": INGEST_KEY},
            )
        finally:
            process.stop()
    assert response.status_code == 202
    assert sync_redis.xlen(keys.ingest) == 1
    assert f"Uvicorn running on https://127.0.0.1:{process.port}" in process.log()
