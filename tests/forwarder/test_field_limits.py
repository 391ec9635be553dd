"""Length limits of each field, the same through ``serve``, ``Publisher`` and ``publish``.

Datadog's limits where it documents one (a tag: 200 characters; a SHA: 40+ hex, of which
64 is the longest git makes), ours where it does not (text fields: 1,000 characters).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from forwarder import InvalidEventError, Publisher
from forwarder.protocol import RedisKeys
from harness.serve import ServeProcess, serve_env
from harness.stack import delete_keys
from workers.cli import main

KEY = f"ingest-key-{uuid.uuid4().hex}"
FAILURE = "/api/v2/dora/failure"
DEPLOYMENT = "/api/v2/dora/deployment"
REPO = "https://github.com/acme/checkout"
START: dict[str, Any] = {"started_at": 1_700_000_000, "services": ["checkout"]}
DEPLOY: dict[str, Any] = {
    "service": "checkout",
    "started_at": 1_700_000_000,
    "finished_at": 1_700_000_090,
}
TAG_201 = "team:" + "d" * 196
HUGE_TAG = "blob:" + "x" * 900_000  # the size that once got a 202
LONG_SHA = "a" * 65
HUGE_SHA = "f" * 900_000

# (what is too long, path, attributes, field, pointer, reason)
TOO_LONG = [
    pytest.param(
        FAILURE,
        {**START, "custom_tags": ["env:prod", TAG_201]},
        "custom_tags[1]",
        "/data/attributes/custom_tags/1",
        "must be at most 200 characters, Datadog's limit for a tag (got 201 characters)",
        id="tag-201",
    ),
    pytest.param(
        FAILURE,
        {**START, "custom_tags": [HUGE_TAG]},
        "custom_tags[0]",
        "/data/attributes/custom_tags/0",
        "must be at most 200 characters, Datadog's limit for a tag (got 900005 characters)",
        id="tag-900KB",
    ),
    pytest.param(
        DEPLOYMENT,
        {**DEPLOY, "custom_tags": [TAG_201]},
        "custom_tags[0]",
        "/data/attributes/custom_tags/0",
        "must be at most 200 characters",
        id="deployment-tag-201",
    ),
    pytest.param(
        DEPLOYMENT,
        {**DEPLOY, "git": {"repository_url": REPO, "commit_sha": LONG_SHA}},
        "git.commit_sha",
        "/data/attributes/git/commit_sha",
        "40 (SHA-1) to 64 (SHA-256) hexadecimal characters (got 65 characters)",
        id="sha-65",
    ),
    pytest.param(
        FAILURE,
        {**START, "git": {"repository_url": REPO, "commit_sha": HUGE_SHA}},
        "git.commit_sha",
        "/data/attributes/git/commit_sha",
        "(got 900000 characters)",
        id="sha-900KB",
    ),
    pytest.param(
        FAILURE,
        {**START, "name": "n" * 1_001},
        "name",
        "/data/attributes/name",
        "at most 1000 characters",
        id="name-1001",
    ),
]
AT_THE_LIMIT = [
    pytest.param(FAILURE, {**START, "custom_tags": ["team:" + "d" * 195]}, id="tag-200"),
    pytest.param(
        DEPLOYMENT,
        {**DEPLOY, "git": {"repository_url": REPO, "commit_sha": "A" * 64}},
        id="sha-256",
    ),
    pytest.param(FAILURE, {**START, "name": "n" * 1_000}, id="name-1000"),
]


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One ``serve`` with the default body limit (1 MiB: a 900 KB field reaches the model)."""
    prefix = f"test-limits-{uuid.uuid4().hex[:12]}"
    env = serve_env(redis_url, prefix, FORWARDER_INGEST_KEYS=KEY)
    process = ServeProcess(env, tmp_path_factory.mktemp("serve") / "serve.log")
    yield process.wait_listening()
    process.stop()
    delete_keys(redis_url, "{" + prefix + "}*")


@pytest.fixture
def publisher(redis_url: str, prefix: str) -> Iterator[Publisher]:
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        yield publisher


def post(server: ServeProcess, path: str, attributes: dict[str, Any]) -> httpx.Response:
    body = json.dumps({"data": {"attributes": attributes}})
    return httpx.post(server.url + path, content=body, headers={"DD-API-KEY": KEY}, timeout=30)


def publish(publisher: Publisher, path: str, attributes: dict[str, Any]) -> str:
    if path == DEPLOYMENT:
        return publisher.deployment(**attributes)
    return publisher.publish(attributes)


@pytest.mark.parametrize(("path", "attributes", "field", "pointer", "reason"), TOO_LONG)
def test_too_long_is_400_pointing_at_the_field(
    server: ServeProcess,
    sync_redis: redis.Redis,
    path: str,
    attributes: dict[str, Any],
    field: str,
    pointer: str,
    reason: str,
) -> None:
    """``serve``: 400, one error whose pointer names the field and whose detail says the limit."""
    stream = RedisKeys(server.prefix).ingest
    before = sync_redis.xlen(stream)
    response = post(server, path, attributes)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["source"] == {"pointer": pointer}
    assert error["detail"].startswith(f"{field}: ")
    assert reason in error["detail"]
    assert sync_redis.xlen(stream) == before


@pytest.mark.parametrize(("path", "attributes", "field", "pointer", "reason"), TOO_LONG)
def test_too_long_is_an_invalid_event_error_naming_the_field(
    publisher: Publisher,
    sync_redis: redis.Redis,
    keys: RedisKeys,
    path: str,
    attributes: dict[str, Any],
    field: str,
    pointer: str,
    reason: str,
) -> None:
    """``Publisher``: ``InvalidEventError`` naming the field and the limit; nothing enqueued."""
    del pointer  # the HTTP test's
    with pytest.raises(InvalidEventError) as raised:
        publish(publisher, path, attributes)
    (error,) = raised.value.errors
    assert error.field == field
    assert reason in error.reason
    assert sync_redis.xlen(keys.ingest) == 0


@pytest.mark.parametrize(("path", "attributes"), AT_THE_LIMIT)
def test_at_the_limit_is_accepted(
    server: ServeProcess, publisher: Publisher, path: str, attributes: dict[str, Any]
) -> None:
    """A value exactly at its limit is taken by ``serve`` (202) and by ``Publisher``."""
    assert post(server, path, attributes).status_code == 202
    assert publish(publisher, path, attributes)


def test_publish_command_names_the_too_long_field_and_keeps_the_good_lines(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """``dora-forwarder publish``: the 900 KB tag's line is named with its field; others go in."""
    monkeypatch.setenv("FORWARDER_REDIS_URL", redis_url)
    monkeypatch.setenv("FORWARDER_KEY_PREFIX", prefix)
    events = tmp_path / "events.jsonl"
    lines = [START, {**START, "custom_tags": [HUGE_TAG]}, {**START, "started_at": 1_700_000_001}]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["publish", str(events)]) == 1
    err = capsys.readouterr().err
    assert f"{events}:2: custom_tags[0]: must be at most 200 characters" in err
    assert sync_redis.xlen(keys.ingest) == 2
