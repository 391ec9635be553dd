"""``dora-forwarder run`` and the ingest endpoint: started with it when keys are set, or not."""

from __future__ import annotations

import io
import json
import signal
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from config import load_settings
from harness.run import RunProcess
from harness.stack import child_env, delete_keys, free_port, wait_until
from workers.cli import main
from workers.cli.run_serve import ingest_problem, start_ingest

KEY = f"ingest-key-{uuid.uuid4().hex}"


def test_without_keys_run_says_the_endpoint_is_off_and_why() -> None:
    """No FORWARDER_INGEST_KEYS: nothing started, and one line naming the variable."""
    err = io.StringIO()
    assert start_ingest(load_settings(ingest_keys=SecretStr(" , ")), err) is None
    assert "ingest endpoint off: FORWARDER_INGEST_KEYS is not set" in err.getvalue()


@pytest.mark.usefixtures("clean_env")
def test_bad_ingest_settings_stop_run_before_it_starts_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Datadog key among the ingest keys: run refuses at once, saying why."""
    monkeypatch.setenv("DD_API_KEY", "the-datadog-key")
    monkeypatch.setenv("FORWARDER_INGEST_KEYS", "mine,the-datadog-key")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "FORWARDER_INGEST_KEYS contains DD_API_KEY" in err
    assert "the-datadog-key" not in err


def test_half_a_tls_configuration_is_a_problem_for_run() -> None:
    """A certificate without its key is refused before run starts a worker."""
    settings = load_settings(ingest_keys=SecretStr(KEY), ingest_tls_certfile="cert.pem")
    assert "FORWARDER_INGEST_TLS_KEYFILE" in str(ingest_problem(settings))


@pytest.mark.integration
def test_run_serves_the_endpoint_on_its_redis_and_stops_it(tmp_path: Path, redis_url: str) -> None:
    """With keys set, run's endpoint enqueues into run's Redis; the worker takes it; both stop."""
    port, prefix = free_port(), f"test-run-ingest-{uuid.uuid4().hex[:12]}"
    env = child_env(
        FORWARDER_METRICS_PORT="0",
        FORWARDER_TICK_S="0.5",
        FORWARDER_REDIS_URL=redis_url,
        FORWARDER_KEY_PREFIX=prefix,
        FORWARDER_INGEST_KEYS=KEY,
        FORWARDER_INGEST_PORT=str(port),
    )
    run = RunProcess(["--dry-run", "--concurrency=1"], env, tmp_path / "run.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), timeout_s=30, what="run's ingest endpoint")
        body = {
            "data": {"attributes": {"id": "incident-run-ingest-1", "started_at": 1, "team": "t"}}
        }
        response = httpx.post(url + "/api/v2/dora/failure", json=body, headers={"DD-API-KEY": KEY})
        assert response.status_code == 202
        printed = wait_until(run.requests, timeout_s=30, what="the dry run's request")
        assert printed[0]["body"]["data"]["attributes"]["id"] == "incident-run-ingest-1"
        # The endpoint's logs go to standard error: standard output stays the requests.
        assert all(json.loads(line) for line in run.lines)
        run.process.send_signal(signal.SIGTERM)  # run alone, not its process group
        assert run.process.wait(30) == 0
        assert not _answers(url), "the endpoint stops with run"
    finally:
        run.stop()
        delete_keys(redis_url, "{" + prefix + "}*")
    log = (tmp_path / "run.log").read_text()
    assert f"ingest endpoint (Datadog's DORA API for producers) on {url}" in log
    assert KEY not in log


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
