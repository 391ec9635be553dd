"""``dora-forwarder serve`` in a process of its own, for the ingest endpoint's tests (loopback)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import Self

import httpx

from harness.stack import REPO, child_env, free_port, wait_until


def serve_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a server: this test's Redis and prefix, short Redis timeouts."""
    env = child_env(
        FORWARDER_REDIS_URL=redis_url,
        FORWARDER_KEY_PREFIX=prefix,
        FORWARDER_PUBLISH_TIMEOUT_S="0.5",
    )
    env.update(extra)
    return env


class ServeProcess:
    """One ``python -m workers.cli serve`` on 127.0.0.1, its output in ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str, scheme: str = "http"):
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.prefix = env["FORWARDER_KEY_PREFIX"]
        command = [sys.executable, "-m", "workers.cli", "serve", "--port", str(self.port), *args]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )

    def wait_listening(self, client: httpx.Client | None = None) -> Self:
        """Return once the server answers (any status), or fail with its log if it exited."""
        probe = client or httpx.Client()

        def listening() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                probe.get(f"{self.url}/health", timeout=5)
            except httpx.TransportError:
                return False
            return True

        try:
            wait_until(listening, timeout_s=30, what=f"serve on port {self.port}")
        finally:
            if client is None:
                probe.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (a graceful shutdown); SIGKILL if it hangs. The exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait(10)
