"""``dora-forwarder doctor`` against the stand-in API and real Redis servers, with real secrets.

The good configuration needs a Redis with AOF (the shared one keeps nothing on disk), so
these tests start their own (``RedisServer``) and change its settings with CONFIG SET, never
the shared server's.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from config import load_settings
from forwarder.protocol import RedisKeys
from harness.stack import RedisServer, free_port
from harness.standin import StandinServer
from workers.cli import main
from workers.cli.doctor import cmd_doctor

APP_KEY = f"app-secret-{uuid.uuid4().hex}"
REDIS_PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A Redis of these tests' own, with a password, AOF and noeviction."""
    own = RedisServer(password=REDIS_PASSWORD).start()
    yield own
    own.stop()


@pytest.fixture
def own_redis(server: RedisServer, prefix: str) -> Iterator[redis.Redis]:
    """A client on it; the test's keys are deleted and its settings restored afterwards."""
    client = redis.Redis.from_url(server.url)
    yield client
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("appendonly", "yes")
    for key in client.scan_iter(match="{" + prefix + "}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def env(
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    server: RedisServer,
    prefix: str,
    api_key: str,
    standin: StandinServer,
) -> dict[str, str]:
    """A good configuration: the stand-in API, its key, an application key, our Redis."""
    values = {
        "DD_API_KEY": api_key,
        "DD_APP_KEY": APP_KEY,
        "FORWARDER_API_URL": standin.url,
        "FORWARDER_REDIS_URL": server.url,
        "FORWARDER_KEY_PREFIX": prefix,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def live_worker(client: redis.Redis, keys: RedisKeys) -> None:
    """Report a worker process as a pump does (Redis' clock)."""
    seconds, micros = client.time()
    client.zadd(keys.workers, {"vm:4242": seconds * 1000 + micros // 1000})


def doctor(
    capsys: pytest.CaptureFixture[str], *flags: str, secrets: tuple[str, ...] = ()
) -> tuple[int, str, dict[str, Any]]:
    """Run ``dora-forwarder doctor``; the exit code, the table, and the checks by name
    (from ``--json``). Asserts no secret shows in either output."""
    code = main(["doctor", *flags])
    table = capsys.readouterr().out
    assert main(["doctor", "--json", *flags]) == code
    document = json.loads(capsys.readouterr().out)
    for secret in (*secrets, APP_KEY, REDIS_PASSWORD):
        assert secret not in table
        assert secret not in json.dumps(document)
    return code, table, {c["name"]: c for c in document["checks"]}


def test_good_configuration_passes(
    env: dict[str, str],
    own_redis: redis.Redis,
    keys: RedisKeys,
    api_key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Key accepted, Redis durable, a live worker: every check ✔ (the reminder •), exit 0."""
    live_worker(own_redis, keys)
    code, table, checks = doctor(capsys, secrets=(api_key,))
    assert code == 0, table
    assert "✘" not in table
    assert "no problem found" in table
    assert {c["status"] for c in checks.values()} == {"ok", "info"}
    assert checks["api_key"]["status"] == "ok"
    assert checks["redis"]["detail"].startswith("redis://:***@127.0.0.1:")
    assert "/ci/settings/dora" in checks["data_source"]["fix"]


def test_json_shape(env: dict[str, str], own_redis: redis.Redis, keys: RedisKeys) -> None:
    """One object: ``ok``, and each check's name, status, ok, detail and fix."""
    live_worker(own_redis, keys)
    out = io.StringIO()
    assert cmd_doctor(load_settings(), True, out) == 0
    document = json.loads(out.getvalue())
    assert set(document) == {"ok", "checks"}
    assert document["ok"] is True
    for item in document["checks"]:
        assert set(item) == {"name", "status", "ok", "detail", "fix"}
        assert item["status"] in {"ok", "info", "warn", "fail"}


def test_wrong_api_key_fails_with_its_fix(
    env: dict[str, str],
    own_redis: redis.Redis,
    keys: RedisKeys,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The stand-in answers 403: ✘ naming the key and the site, exit 1, the key never shown."""
    wrong = f"wrong-key-{uuid.uuid4().hex}"
    monkeypatch.setenv("DD_API_KEY", wrong)
    live_worker(own_redis, keys)
    code, table, checks = doctor(capsys, secrets=(wrong,))
    assert code == 1
    assert checks["api_key"]["status"] == "fail"
    assert "HTTP 403" in checks["api_key"]["detail"]
    assert "DD_SITE" in checks["api_key"]["fix"]
    assert "✘ api_key" in table
    assert "fix: check DD_API_KEY" in table


def test_unreachable_api(
    env: dict[str, str],
    own_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    api_key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listens at FORWARDER_API_URL: ✘ "cannot reach", the fix names the setting."""
    monkeypatch.setenv("FORWARDER_API_URL", f"http://127.0.0.1:{free_port()}")
    code, _, checks = doctor(capsys, secrets=(api_key,))
    assert code == 1
    assert "cannot reach" in checks["api_key"]["detail"]
    assert "FORWARDER_API_URL" in checks["api_key"]["fix"]


@pytest.mark.parametrize("api_url", ["http://127.0.0.1:abc", "http://bad..host.test"])
def test_an_api_url_no_request_can_use_is_a_verdict_not_a_crash(
    env: dict[str, str],
    own_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    api_key: str,
    capsys: pytest.CaptureFixture[str],
    api_url: str,
) -> None:
    """A port that is no number, an empty DNS label: ✘ "cannot reach", exit 1, JSON printed."""
    monkeypatch.setenv("FORWARDER_API_URL", api_url)
    code, _, checks = doctor(capsys, secrets=(api_key,))
    assert code == 1
    assert checks["api_key"]["status"] == "fail"
    assert "cannot reach" in checks["api_key"]["detail"]


def test_a_proxy_in_the_environment_is_not_used(
    env: dict[str, str],
    own_redis: redis.Redis,
    keys: RedisKeys,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The workers take no proxy from the environment: neither does doctor's key check."""
    live_worker(own_redis, keys)
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(variable, dead_proxy)
    _, _, checks = doctor(capsys)
    assert checks["api_key"]["status"] == "ok", checks["api_key"]


def test_government_site(
    env: dict[str, str],
    own_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """DD_SITE=ddog-gov.com: DORA is not offered there."""
    monkeypatch.setenv("DD_SITE", "ddog-gov.com")
    code, _, checks = doctor(capsys)
    assert code == 1
    assert checks["site"]["status"] == "fail"


def test_unreachable_redis_is_bounded_and_masked(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A closed port: ✘ with the masked URL, within the Redis timeout, no password shown."""
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("FORWARDER_REDIS_URL", url)
    started = time.monotonic()
    code, _table, checks = doctor(capsys)
    assert time.monotonic() - started < 10  # two runs; each gives up on Redis within 1 s
    assert code == 1
    assert checks["redis"]["status"] == "fail"
    assert "redis://:***@127.0.0.1:" in checks["redis"]["detail"]
    assert "workers" not in checks  # the fleet's checks need Redis


@pytest.mark.parametrize(
    ("setting", "value", "name"),
    [
        ("maxmemory-policy", "allkeys-lru", "redis_eviction"),
        ("appendonly", "no", "redis_persistence"),
    ],
)
def test_redis_that_can_lose_events(
    env: dict[str, str],
    own_redis: redis.Redis,
    keys: RedisKeys,
    setting: str,
    value: str,
    name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Eviction on, or nothing on disk (AOF off, no snapshots): ✘ with the setting to change."""
    live_worker(own_redis, keys)
    own_redis.config_set(setting, value)
    code, _, checks = doctor(capsys)
    assert code == 1
    assert checks[name]["status"] == "fail"
    assert setting in checks[name]["fix"]


def test_replicas_wanted_but_missing(
    env: dict[str, str],
    own_redis: redis.Redis,
    keys: RedisKeys,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """FORWARDER_PUBLISH_REPLICAS=1 on a Redis without replicas: publishes would fail."""
    monkeypatch.setenv("FORWARDER_PUBLISH_REPLICAS", "1")
    live_worker(own_redis, keys)
    code, _, checks = doctor(capsys)
    assert code == 1
    assert checks["replicas"]["status"] == "fail"


def test_dead_letters_and_no_workers(
    env: dict[str, str],
    own_redis: redis.Redis,
    keys: RedisKeys,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A dead letter and no live worker: two ✘, each with its command."""
    own_redis.xadd(keys.dead, {"reason": "rejected by Datadog (HTTP 400)"})
    code, table, checks = doctor(capsys)
    assert code == 1
    assert checks["dead_letters"]["status"] == "fail"
    assert "dora-forwarder dead-letters list" in checks["dead_letters"]["fix"]
    assert checks["workers"]["status"] == "fail"
    assert "dora-forwarder run" in checks["workers"]["fix"]
    assert "2 problem(s)" in table


def test_app_key_missing_while_operations_wait(
    env: dict[str, str],
    own_redis: redis.Redis,
    keys: RedisKeys,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A PATCH waits for an application key and none is set: ✘ saying to set DD_APP_KEY."""
    monkeypatch.delenv("DD_APP_KEY")
    live_worker(own_redis, keys)
    own_redis.zadd(keys.app_key_waits, {"deployment_patch/dep-000000000001": 1})
    code, _, checks = doctor(capsys)
    assert code == 1
    assert checks["app_key"]["status"] == "fail"
    assert "DD_APP_KEY" in checks["app_key"]["fix"]


def test_clock_skew_fails(env: dict[str, str], own_redis: redis.Redis, keys: RedisKeys) -> None:
    """A host clock two minutes ahead of Redis' (injected): ✘ clock, exit 1."""
    live_worker(own_redis, keys)
    out = io.StringIO()
    code = cmd_doctor(load_settings(), True, out, host_ms=lambda: time.time() * 1000 + 120_000)
    checks = {c["name"]: c for c in json.loads(out.getvalue())["checks"]}
    assert code == 1
    assert checks["clock"]["status"] == "fail"
    assert "ahead of" in checks["clock"]["detail"]


def test_standin_validates_keys_as_datadog_documents(standin: StandinServer, api_key: str) -> None:
    """GET /api/v1/validate: 200 {"valid": true} for its key, 403 {"errors": [...]} else."""
    url = standin.url + "/api/v1/validate"
    good = httpx.get(url, headers={"DD-API-KEY": api_key})
    assert (good.status_code, good.json()) == (200, {"valid": True})
    bad = httpx.get(url, headers={"DD-API-KEY": "nope"})
    assert (bad.status_code, bad.json()) == (403, {"errors": ["Forbidden"]})
    assert standin.requests() == []  # a key check is no DORA write
