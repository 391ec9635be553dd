"""The shared corpus of hostile input (``tests/data/hostile.py``) through every producer path.

Python API, ``publish`` in a process of its own, a ``serve`` process, and the worker's
decoding of raw entries (the whole path through a real worker is in
``test_poison_recovery.py``): each refuses every case with a reason naming what is wrong,
never a traceback, and takes the good input around it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from forwarder import InvalidEventError, InvalidEventsError, Publisher
from forwarder.protocol import PAYLOAD_BASE64, RedisKeys
from harness.serve import ServeProcess, serve_env
from harness.stack import REPO, delete_keys
from tests.data.hostile import DOCUMENTS, ENTRIES, GOOD_ATTRIBUTES, OBJECTS, Hostile
from workers.delivery.fold import plan_fold
from workers.delivery.poison import REASON_MAX_CHARS

INGEST_KEY = f"ingest-key-{uuid.uuid4().hex}"


def good(number: int) -> dict[str, Any]:
    """A valid incident of its own id."""
    return {**GOOD_ATTRIBUTES, "id": f"hostile-good-{number:06d}"}


def named(cases: tuple[Hostile, ...]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", cases, ids=[case.name for case in cases])


def test_documents_fit_on_one_line() -> None:
    """Each document can be a line of a JSON-lines file."""
    assert not [case.name for case in DOCUMENTS if b"\n" in case.data]


# --- Python API -------------------------------------------------------------------------


@pytest.fixture
def publisher(redis_url: str, prefix: str) -> Iterator[Publisher]:
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        yield publisher


@named(OBJECTS)
def test_publish_refuses_hostile_objects_by_name(
    case: Hostile, publisher: Publisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """publish raises InvalidEventError naming the field; publish_many keeps the good ones."""
    with pytest.raises(InvalidEventError) as caught:
        publisher.publish(case.data)
    assert case.says in str(caught.value)
    assert str(caught.value).isprintable()
    assert len(str(caught.value)) < 2_000
    with pytest.raises(InvalidEventsError) as many:
        publisher.publish_many([good(1), case.data, good(2)])
    assert many.value.index == 1
    assert case.says in str(many.value)
    assert sync_redis.xlen(keys.ingest) == 2


# --- the worker's decoding of raw entries -------------------------------------------------


@named(ENTRIES)
def test_entry_becomes_a_dead_letter_with_its_reason(case: Hostile) -> None:
    """A raw entry is planned as a dead letter with the reason and its bytes, bounded."""
    plan = plan_fold([(b"7-0", case.data), (b"7-1", _good_entry(1))])
    (poison,) = plan.poison
    assert case.says in poison.reason
    assert poison.reason.isprintable()
    assert len(poison.reason) <= REASON_MAX_CHARS + 40
    assert [u.incident_id for u in plan.updates] == ["hostile-good-000001"]
    payload = json.loads(poison.payload)
    if poison.encoding == PAYLOAD_BASE64:
        payload = {base64.b64decode(k): base64.b64decode(v) for k, v in payload.items()}
    else:
        payload = {k.encode(): v.encode() for k, v in payload.items()}
    if poison.truncated:
        assert len(poison.payload) < 100_000
        assert poison.size_bytes > 65_536
    else:
        assert payload == case.data


def _good_entry(number: int) -> dict[bytes, bytes]:
    return {b"v": b"1", b"kind": b"failure", b"event": json.dumps(good(number)).encode()}


# --- publish, in a process of its own -----------------------------------------------------


def test_publish_command_names_every_bad_line_and_enqueues_every_good_one(
    redis_url: str, prefix: str, keys: RedisKeys, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """Every document on a line of its own: each named with its number, no traceback."""
    lines: list[bytes] = []
    expected: dict[int, Hostile] = {}
    for number, case in enumerate(DOCUMENTS):
        lines.append(json.dumps(good(number)).encode())
        lines.append(case.data)
        expected[len(lines)] = case
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    env = serve_env(redis_url, prefix)
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "publish", str(path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    err = done.stderr.decode()
    assert "Traceback" not in err, err[-4000:]
    assert done.returncode == 1
    reported = {
        int(line.split(":", 2)[1]): line for line in err.splitlines() if line.startswith(f"{path}:")
    }
    assert sorted(reported) == sorted(expected)
    for number, case in expected.items():
        assert case.says in reported[number], (case.name, reported[number][:300])
        assert "\x1b" not in reported[number]
    count = len(DOCUMENTS)
    assert f"published {count} event(s) from {path}; {count} line(s) rejected" in err
    assert sync_redis.xlen(keys.ingest) == count


# --- serve, in a process of its own --------------------------------------------------------


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One ``serve`` with the default body limit, for the whole corpus."""
    prefix = f"test-hostile-{uuid.uuid4().hex[:12]}"
    env = serve_env(redis_url, prefix, FORWARDER_INGEST_KEYS=INGEST_KEY)
    process = ServeProcess(env, tmp_path_factory.mktemp("serve") / "serve.log")
    process.wait_listening()
    yield process
    process.stop()
    delete_keys(redis_url, "{" + prefix + "}*")
    log = process.log()
    assert "Traceback" not in log, log[-4000:]


@named(DOCUMENTS)
def test_serve_answers_400_naming_the_reason(
    case: Hostile, server: ServeProcess, sync_redis: redis.Redis
) -> None:
    """A hostile body is a 400 whose error says what is wrong; nothing is enqueued."""
    body = b'{"data":{"attributes":' + case.data + b"}}"
    answer = httpx.post(
        server.url + "/api/v2/dora/failure",
        content=body,
        headers={"DD-API-KEY": INGEST_KEY},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text[:500]
    details = " | ".join(error["detail"] for error in answer.json()["errors"])
    assert case.says in details
    assert "\x1b" not in details
    assert sync_redis.xlen(RedisKeys(server.prefix).ingest) == 0
