"""A real server of another project run on loopback for tests: its process group, its log,
its readiness (``GET /-/ready``, as Prometheus and Alertmanager both answer) and its stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Self

import httpx

from harness.stack import wait_until


class LoopbackServer:
    """``command`` (which listens on 127.0.0.1:``port``) in its own process group, its
    output in ``log_path``; ``self._client`` talks to it."""

    def __init__(self, name: str, command: list[str], port: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._client = httpx.Client(base_url=self.url, timeout=5)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def __enter__(self) -> Self:
        return self.wait_ready()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float = 30.0) -> Self:
        """Return once ``GET /-/ready`` answers 200; fail with the log if it exited."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                return self._client.get("/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout_s=timeout_s, what=f"{self.name} on port {self.port}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM; SIGKILL the group if it hangs. The exit code."""
        self._client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(10)
