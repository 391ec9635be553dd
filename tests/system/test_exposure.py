"""Nothing is exposed unless configured: metrics on loopback, no Datadog key in ``serve``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from config import Settings
from harness.run import RunProcess, with_group_gone
from harness.stack import REPO, Worker, delete_keys, free_port, wait_until
from workers.cli.run_serve import serve_environment

LISTEN = "0A"  # the state of a listening socket in /proc/net/tcp


def _listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp{,6} writes them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, port_hex = fields[1].rpartition(":")
            if int(port_hex, 16) == port and fields[3] == LISTEN:
                found.add(address)
    return found


def test_metrics_listen_on_loopback_by_default() -> None:
    """FORWARDER_METRICS_HOST defaults to 127.0.0.1, as the ingest endpoint's host does."""
    assert Settings().metrics_host == "127.0.0.1"
    assert Settings().ingest_host == "127.0.0.1"


@pytest.mark.integration
def test_a_worker_serves_metrics_on_loopback_only(start_worker: Callable[..., Worker]) -> None:
    """A real worker, told only a port, listens on 127.0.0.1 and nowhere else."""
    port = free_port()
    start_worker("worker", "--concurrency=1", FORWARDER_METRICS_PORT=str(port))
    addresses = wait_until(
        lambda: _listening_addresses(port), timeout_s=60, what="the metrics port to listen"
    )
    assert addresses == {"0100007F"}, addresses  # 127.0.0.1, little-endian hex


def test_serve_environment_has_no_datadog_variable() -> None:
    """DD_API_KEY (any case) and every other DD_ variable are withheld; the rest is kept."""
    environ = {
        "DD_API_KEY": "k",
        "dd_api_key": "k",
        "DD_SITE": "datadoghq.eu",
        "FORWARDER_INGEST_KEYS": "i",
        "FORWARDER_REDIS_URL": "redis://x/0",
        "PATH": "/bin",
    }
    assert serve_environment(environ) == {
        "FORWARDER_INGEST_KEYS": "i",
        "FORWARDER_REDIS_URL": "redis://x/0",
        "PATH": "/bin",
    }


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                children.append(int(entry.name))
    return children


def _serve_child(pid: int) -> int | None:
    for child in _children(pid):
        try:
            if b"serve" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                return child
        except OSError:
            continue
    return None


@pytest.mark.integration
def test_run_gives_serve_no_datadog_key(tmp_path: Path, redis_url: str) -> None:
    """The web-facing serve child of run has the ingest keys and not DD_API_KEY."""
    datadog_key, port = f"dd-{uuid.uuid4().hex}", free_port()
    prefix = f"test-exposure-{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORWARDER_", "DD_"))}
    env.update(
        PYTHONPATH=str(REPO),
        DD_API_KEY=datadog_key,
        FORWARDER_METRICS_PORT="0",
        FORWARDER_REDIS_URL=redis_url,
        FORWARDER_KEY_PREFIX=prefix,
        FORWARDER_INGEST_KEYS=f"ingest-{uuid.uuid4().hex}",
        FORWARDER_INGEST_PORT=str(port),
    )
    run = RunProcess(["--concurrency=1"], env, tmp_path / "run.log")
    try:
        wait_until(
            lambda: _health(f"http://127.0.0.1:{port}"), timeout_s=60, what="run's serve child"
        )
        child = _serve_child(run.process.pid)
        assert child is not None
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
    finally:
        # SIGKILL: all it checks is written by now, and a SIGTERM in a worker's first
        # second can hang Celery's warm shutdown (on main too; see the report).
        with_group_gone(run.process.pid)
        run.stop()
        delete_keys(redis_url, "{" + prefix + "}*")
    names = {item.split(b"=", 1)[0] for item in environ if item}
    assert b"FORWARDER_INGEST_KEYS" in names
    assert b"DD_API_KEY" not in names
    assert not any(datadog_key.encode() in item for item in environ)


def _health(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
