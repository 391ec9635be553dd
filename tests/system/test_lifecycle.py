"""A worker's life cycle seen from outside: Celery's remote control reaches it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from harness.stack import REPO, Worker, wait_until, worker_env
from harness.standin import StandinServer

pytestmark = pytest.mark.integration


def test_celery_inspect_shows_the_pump_task(
    start_worker: Callable[..., Worker],
    standin: StandinServer,
    redis_url: str,
    prefix: str,
    api_key: str,
) -> None:
    """`celery -A workers inspect registered` (what Flower uses) lists dora.pump."""
    worker = start_worker()
    wait_until(lambda: "ready." in worker.log(), timeout_s=30, what="the worker to be ready")
    inspected = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "inspect", "registered", "--timeout=5"],
        env=worker_env(redis_url, prefix, standin.url, api_key),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert inspected.returncode == 0, inspected.stderr
    assert "dora.pump" in inspected.stdout
    assert "1 node online" in inspected.stdout
