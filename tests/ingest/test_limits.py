"""The ingest endpoint under hostile clients: slow headers, slow bodies, floods, refused keys.

Each test starts a real ``serve`` of its own (the limits are settings) and talks to it over
raw sockets where a well-behaved client library would not misbehave enough.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from forwarder.protocol import RedisKeys
from harness.serve import ServeProcess, serve_env
from harness.stack import wait_until

KEY = f"ingest-key-{uuid.uuid4().hex}"
DATADOG_KEY = f"datadog-key-{uuid.uuid4().hex}"
FAILURE = "/api/v2/dora/failure"
BODY = json.dumps(
    {"data": {"attributes": {"started_at": 1_700_000_000, "services": ["checkout"]}}}
).encode()
HEADER_TIMEOUT_S = 2.0
SLACK_S = 8.0
"""Allowed beyond a deadline before the test calls it missed (a loaded 2-core machine)."""
DRIP_FOR_S = HEADER_TIMEOUT_S + SLACK_S + 5
LINE = re.compile(
    r"WARNING/dora_forwarder\.ingest\] refused (\d+) request\(s\) in [\d.]+ s: (.+?);"
)

Start = Callable[..., ServeProcess]


@pytest.fixture
def start(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Start]:
    """Start ``serve`` processes with extra settings; each is stopped afterwards."""
    started: list[ServeProcess] = []

    def run(**settings: str) -> ServeProcess:
        env = serve_env(redis_url, prefix, FORWARDER_INGEST_KEYS=KEY, **settings)
        process = ServeProcess(env, tmp_path / f"serve-{len(started)}.log")
        started.append(process)
        return process.wait_listening()

    yield run
    for process in started:
        process.stop()


def head(key: str = KEY, length: int = len(BODY)) -> bytes:
    return (
        f"POST {FAILURE} HTTP/1.1\r\nHost: 127.0.0.1\r\nDD-API-KEY: {key}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def read_response(connection: socket.socket) -> bytes:
    """One whole response (head and its Content-Length of body) from a raw connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(4096) or b"\r\n\r\n"
    head_part, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: (\d+)", head_part)
    while length is not None and len(body) < int(length.group(1)):
        body += connection.recv(4096) or b" " * int(length.group(1))
    return head_part + b"\r\n\r\n" + body


def drip_until_closed(connection: socket.socket, byte: bytes) -> tuple[float, bytes]:
    """Send ``byte`` every 0.2 s until the server closes; (seconds taken, what it answered)."""
    connection.settimeout(0.2)
    answer = b""
    started = time.monotonic()
    while time.monotonic() - started < DRIP_FOR_S:
        try:
            connection.sendall(byte)
            chunk = connection.recv(4096)
        except TimeoutError:
            continue
        except OSError:  # reset: closed
            return time.monotonic() - started, answer
        if not chunk:
            return time.monotonic() - started, answer
        answer += chunk
    raise AssertionError(f"the connection was still open after {DRIP_FOR_S:g} s of dripping")


def refusal_counts(log: str) -> dict[str, list[int]]:
    """The counts of each reason's refusal lines, in order."""
    counts: dict[str, list[int]] = {}
    for match in LINE.finditer(log):
        counts.setdefault(match.group(2), []).append(int(match.group(1)))
    return counts


@pytest.mark.parametrize("when", ["first-request", "after-a-response", "body-after-403"])
def test_drip_fed_request_is_cut_off_within_the_header_timeout(start: Start, when: str) -> None:
    """Headers (or a refused request's body) fed a byte at a time: closed after the deadline."""
    server = start(FORWARDER_INGEST_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        if when == "after-a-response":  # a keep-alive connection that served a request
            connection.sendall(head() + BODY)
            assert read_response(connection).startswith(b"HTTP/1.1 202")
        if when == "body-after-403":  # answered before its body: the rest must not linger
            connection.sendall(head(key="wrong", length=10_000_000))
            assert read_response(connection).startswith(b"HTTP/1.1 403")
            taken, _ = drip_until_closed(connection, b"x")
        else:
            connection.sendall(f"POST {FAILURE} HTTP/1.1\r\nX-Slow: ".encode())
            taken, answer = drip_until_closed(connection, b"a")
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
    assert taken < HEADER_TIMEOUT_S + SLACK_S
    server.stop()
    assert "request headers not complete within FORWARDER_INGEST_HEADER_TIMEOUT_S" in server.log()


def test_silent_connection_is_closed_within_the_header_timeout(start: Start) -> None:
    """A connection that never sends a byte is closed, without an answer, after the deadline."""
    server = start(FORWARDER_INGEST_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S))
    with socket.create_connection(("127.0.0.1", server.port), timeout=DRIP_FOR_S) as connection:
        started = time.monotonic()
        assert connection.recv(4096) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT_S + SLACK_S


def test_drip_fed_body_gets_408_within_the_body_timeout(start: Start) -> None:
    """A body fed a byte at a time: 408 naming the setting, and the connection is closed."""
    server = start(FORWARDER_INGEST_BODY_TIMEOUT_S="2")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(head(length=1_000) + b'{"data"')
        taken, answer = drip_until_closed(connection, b" ")
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
    assert b"FORWARDER_INGEST_BODY_TIMEOUT_S" in answer
    assert taken < 2 + SLACK_S


def test_connections_past_the_limit_get_503_and_the_server_stays_responsive(
    start: Start, sync_redis: redis.Redis, prefix: str
) -> None:
    """With the cap held by idle connections, a flood gets 503 + Retry-After; then 202 again."""
    server = start(FORWARDER_INGEST_MAX_CONNECTIONS="4", FORWARDER_INGEST_HEADER_TIMEOUT_S="60")
    url = server.url + FAILURE
    with ExitStack() as holders:
        for _ in range(4):
            holders.enter_context(socket.create_connection(("127.0.0.1", server.port)))

        def post(_: int) -> httpx.Response:
            return httpx.post(url, content=BODY, headers={"DD-API-KEY": KEY}, timeout=10)

        with ThreadPoolExecutor(16) as pool:
            flood = list(pool.map(post, range(48)))
        health = httpx.get(server.url + "/health", timeout=10)
    assert {response.status_code for response in flood} == {503}
    assert {response.headers["retry-after"] for response in flood} == {"1"}
    assert flood[0].json() == {"errors": ["Service Unavailable"]}
    assert health.status_code == 503  # answered at once, not queued behind the idle ones
    assert sync_redis.xlen(RedisKeys(prefix).ingest) == 0
    # The idle connections are gone: the endpoint serves again.
    statuses: list[int] = []

    def served() -> bool:
        statuses.append(post(0).status_code)
        return statuses[-1] == 202

    wait_until(served, timeout_s=30, what="a 202 after the flood")
    server.stop()
    counts = refusal_counts(server.log())
    refused = len(flood) + 1 + statuses.count(503)  # the flood, /health, any retry above
    assert sum(counts["more connections open than FORWARDER_INGEST_MAX_CONNECTIONS"]) == refused


def test_refused_requests_make_one_line_per_reason_per_interval_with_counts(
    start: Start,
) -> None:
    """Hundreds of refused keys: a line or two per reason whose counts add up; no key shown."""
    server = start(FORWARDER_INGEST_REFUSAL_LOG_INTERVAL_S="3600", DD_API_KEY=DATADOG_KEY)
    sent = {"a key that is not one of FORWARDER_INGEST_KEYS": 300, "no DD-API-KEY header": 100}
    sent["the Datadog API key itself (producers must use an ingest key)"] = 50
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for number in range(300):
            assert (
                client.post(FAILURE, headers={"DD-API-KEY": f"wrong-{number}"}).status_code == 403
            )
        for _ in range(100):
            assert client.post(FAILURE).status_code == 403
        for _ in range(50):
            assert client.post(FAILURE, headers={"DD-API-KEY": DATADOG_KEY}).status_code == 403
    server.stop()  # a stopping server writes the counts it held back
    log = server.log()
    counts = refusal_counts(log)
    assert {reason: sum(found) for reason, found in counts.items()} == sent
    assert all(len(found) <= 2 for found in counts.values()), counts
    assert log.count("WARNING") == sum(len(found) for found in counts.values())
    assert "wrong-1" not in log
    assert DATADOG_KEY not in log


def test_unparsable_requests_are_counted_not_logged_one_by_one(start: Start) -> None:
    """uvicorn's WARNING per invalid request goes through the same per-interval counts."""
    server = start(FORWARDER_INGEST_REFUSAL_LOG_INTERVAL_S="3600")
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert connection.recv(4096).startswith(b"HTTP/1.1 400")
    server.stop()
    log = server.log()
    assert "Invalid HTTP request received." not in log
    assert refusal_counts(log) == {"not a valid HTTP request (uvicorn answered 400)": [1, 29]}


def test_client_leaving_mid_body_is_not_a_server_error(start: Start) -> None:
    """A client that closes before its body ends: one INFO line, no ERROR, no traceback."""
    server = start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(head(length=1_000) + b'{"data"')
    # The server keeps serving; then its log is read whole.
    wait_until(lambda: "before its body ended" in server.log(), timeout_s=30, what="the line")
    server.stop()
    log = server.log()
    assert "ERROR" not in log
    assert "Traceback" not in log
