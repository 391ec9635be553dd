"""Everything follows the primary through a Sentinel failover, unaided.

A real primary, replica and three sentinels (``harness.sentinel``), the data nodes behind a
password. The Publisher, the CLI's ``publish``, ``serve`` and a real worker (its store and
Celery's broker) all take the ``sentinel://`` URL; the primary is SIGKILLed while they run;
once the sentinels promote the replica, the same processes publish and deliver again
without a restart.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from forwarder import Publisher
from harness.sentinel import SentinelCluster, sentinel_binary
from harness.serve import ServeProcess, serve_env
from harness.stack import REPO, Worker, child_env, wait_until, worker_env
from harness.standin import StandinServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sentinel_binary() is None, reason="needs redis-sentinel (apt-get)"),
]

MARK = uuid.uuid4().hex
PASSWORD = f"pw;{MARK}@/ +%"
INGEST_KEY = f"ingest-key-{uuid.uuid4().hex}"
NS = 1_000_000_000


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    with SentinelCluster(password=PASSWORD) as running:
        yield running


def _incident(name: str) -> dict[str, object]:
    return {"id": f"incident-sentinel-{name}-0001", "team": "t", "started_at": 1_700_000_000}


def _cli_publish(env: dict[str, str], name: str) -> subprocess.CompletedProcess[str]:
    line = f'{{"id": "incident-sentinel-{name}-0001", "team": "t", "started_at": 1700000000}}\n'
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "publish", "-"],
        input=line,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def _post(server: ServeProcess, name: str) -> int:
    body = {"data": {"attributes": _incident(name)}}
    answer = httpx.post(
        server.url + "/api/v2/dora/failure",
        json=body,
        headers={"DD-API-KEY": INGEST_KEY},
        timeout=10,
    )
    return answer.status_code


def test_publisher_cli_serve_and_worker_follow_the_primary_through_a_failover(
    cluster: SentinelCluster, standin: StandinServer, api_key: str, tmp_path: Path
) -> None:
    """Before and after the primary's SIGKILL: each producer publishes, the worker delivers."""
    prefix = f"sentinel-{uuid.uuid4().hex[:8]}"
    sentinel = {"FORWARDER_REDIS_SENTINEL_MASTER": cluster.master_name}
    cli_env = child_env(FORWARDER_REDIS_URL=cluster.url, FORWARDER_KEY_PREFIX=prefix, **sentinel)
    worker = Worker(
        ["worker", "--beat", "--concurrency=1"],
        worker_env(cluster.url, prefix, standin.url, api_key, **sentinel),
        tmp_path / "worker.log",
        tmp_path,
    )
    server = ServeProcess(
        serve_env(cluster.url, prefix, FORWARDER_INGEST_KEYS=INGEST_KEY, **sentinel),
        tmp_path / "serve.log",
    )
    publisher = Publisher.from_url(
        cluster.url, key_prefix=prefix, timeout_s=1.0, sentinel_master=cluster.master_name
    )
    try:
        server.wait_listening()

        def delivered(*names: str) -> bool:
            held = standin.latest()
            return all(_incident(name)["id"] in held for name in names)

        publisher.publish(_incident("publisher-before"))
        assert _cli_publish(cli_env, "cli-before").returncode == 0
        assert _post(server, "serve-before") == 202
        before = ("publisher-before", "cli-before", "serve-before")
        wait_until(lambda: delivered(*before), timeout_s=60, what="delivery before the failover")

        old = cluster.kill_primary()
        failover_s = cluster.wait_failover(old)
        assert cluster.primary_port() != old

        # Unaided: the same publisher, server and worker, no restart, no retry by the test.
        publisher.publish(_incident("publisher-after"))
        assert _post(server, "serve-after") == 202
        cli = _cli_publish(cli_env, "cli-after")
        assert cli.returncode == 0, cli.stderr
        after = ("publisher-after", "cli-after", "serve-after")
        wait_until(lambda: delivered(*after), timeout_s=60, what="delivery after the failover")
        assert worker.process.poll() is None, "the worker exited"
        print(f"failover took {failover_s:.1f} s")
    finally:
        publisher.close()
        server.stop()
        worker.stop()
    for log in (worker.log(), server.log()):
        assert MARK not in log, "the Redis password appeared in a log"
