"""Static checks of the compose file's `sentinel` profile: a replica of `redis` and three
sentinels that watch it, and the variables that point the forwarder's services at them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import Settings
from harness.stack import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
MASTER = "dora"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return dict(data["services"])


def _sentinel_conf(service: dict[str, Any], tmp_path: Path) -> str:
    """The file a sentinel's script writes on its first start (compose turns $$ into $)."""
    argv = service["command"]
    assert argv[:2] == ["sh", "-c"]
    script = (
        argv[2].replace("/data/", f"{tmp_path}/").replace("exec redis-server", "echo redis-server")
    )
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert f"redis-server {tmp_path}/sentinel.conf --sentinel" in result.stdout
    return (tmp_path / "sentinel.conf").read_text()


def test_the_profile_adds_a_replica_and_three_sentinels(services: dict[str, Any]) -> None:
    """Replica and sentinels run only with `--profile sentinel`, published nowhere."""
    for name in ("redis-replica", *SENTINELS):
        assert services[name]["profiles"] == ["sentinel"], name
        assert "ports" not in services[name], f"{name} is published"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_replica_copies_redis_durably(services: dict[str, Any]) -> None:
    """`--replicaof redis 6379`, with the primary's AOF and noeviction, on its own volume."""
    argv = [str(arg) for arg in services["redis-replica"]["command"]]
    assert argv[argv.index("--replicaof") + 1 : argv.index("--replicaof") + 3] == ["redis", "6379"]
    for flag, value in (("--appendonly", "yes"), ("--maxmemory-policy", "noeviction")):
        assert argv[argv.index(flag) + 1] == value
    assert any(v.endswith(":/data") for v in services["redis-replica"]["volumes"])


@pytest.mark.parametrize("name", SENTINELS)
def test_each_sentinel_watches_redis_with_a_quorum_of_two(
    services: dict[str, Any], name: str, tmp_path: Path
) -> None:
    """Monitor `redis` as `dora`, quorum 2 of 3, by name; its file kept on its own volume."""
    conf = _sentinel_conf(services[name], tmp_path)
    assert f"sentinel monitor {MASTER} redis 6379 2" in conf
    assert "sentinel resolve-hostnames yes" in conf
    assert re.search(rf"sentinel down-after-milliseconds {MASTER} \d+", conf)
    assert f"{name}-data:/data" in services[name]["volumes"]


def test_env_example_points_the_services_at_the_sentinels() -> None:
    """The documented values make a valid Sentinel configuration for compose's services."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    url = ";".join(f"sentinel://{name}:26379" for name in SENTINELS)
    assert url in text
    assert f"next line to {MASTER}" in text
    settings = Settings(redis_url=url, redis_sentinel_master=MASTER)
    assert settings.redis_url_for_logs == url


def test_every_celery_service_gets_the_master_name(services: dict[str, Any]) -> None:
    """Worker, beat, flower and ingest get the same URL and master name."""
    for name in ("worker", "beat", "flower", "ingest"):
        env = services[name]["environment"]
        assert env["FORWARDER_REDIS_SENTINEL_MASTER"] == "${DORA_COMPOSE_SENTINEL_MASTER:-}"
