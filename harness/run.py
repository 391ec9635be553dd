"""``dora-forwarder run`` in a process group of its own, its standard output read as it comes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any


class RunProcess:
    """``dora-forwarder run`` in a process of its own; its stdout lines collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.lines: list[str] = []
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "run", *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.lines.append(line.decode())

    def requests(self) -> list[dict[str, Any]]:
        """The dry run's requests printed so far."""
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def stop(self) -> int:
        """SIGTERM to the main process (a warm shutdown), then wait for everything to end."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
        finally:
            # Whatever outlived run in its group (a child it lost track of) goes too.
            with_group_gone(self.process.pid)
            self._reader.join(10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self._log.close()
        return code


def with_group_gone(group: int) -> None:
    """SIGKILL every process left in process group ``group`` (none left: nothing to do)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
