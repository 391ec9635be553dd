"""The real stack for integration tests, fault tests and the chaos script.

Real ``celery`` worker processes (each in its own process group, so that a SIGKILL takes
the whole tree like an orchestrator does), a Redis server of its own with AOF when a test
restarts Redis, and helpers to read what the stand-in API received. Loopback only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from harness.standin import KINDS, DoraStandin
from workers.ops.embedded_redis import embedded_binary

REPO = Path(__file__).resolve().parents[1]


def wait_until(
    condition: Callable[[], Any], *, timeout_s: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def child_env(**extra: str) -> dict[str, str]:
    """This process' environment for a child: no FORWARDER_*/DD_* of the machine's, the
    repository importable, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORWARDER_", "DD_"))}
    env.update(PYTHONPATH=str(REPO), **extra)
    return env


def worker_env(
    redis_url: str, prefix: str, api_url: str, api_key: str | None, **extra: str
) -> dict[str, str]:
    """The environment of a worker process: fast retries and short leases for tests."""
    env = child_env(
        FORWARDER_REDIS_URL=redis_url,
        FORWARDER_KEY_PREFIX=prefix,
        FORWARDER_API_URL=api_url,
        FORWARDER_TASK_BUDGET_S="2",
        FORWARDER_TICK_S="0.5",
        FORWARDER_BACKOFF_BASE_S="0.05",
        FORWARDER_BACKOFF_MAX_S="0.2",
        FORWARDER_HTTP_TIMEOUT_S="5",
        FORWARDER_LEASE_S="20",
        # Many workers share this machine in tests: metrics only where a test asks for them.
        FORWARDER_METRICS_PORT="0",
    )
    if api_key is not None:
        env["DD_API_KEY"] = api_key
    env.update(extra)
    return env


class Worker:
    """A real ``celery -A workers worker`` (or beat) process group and its log."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        cwd: Path,
        app: str = "workers",
        loglevel: str = "INFO",
        wrapper: Sequence[str] = (),
    ) -> None:
        """``wrapper`` goes before the command, e.g. ``("faketime", "-f", "-10s")``."""
        self.log_path = log_path
        command = [
            *wrapper,
            *(sys.executable, "-m", "celery", "-A", app, *argv, f"--loglevel={loglevel}"),
        ]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` to the main process; wait (SIGKILL the group after ``timeout_s``)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        code = self.process.poll()
        # Pool processes outliving their parent would keep consuming: make sure they are gone.
        self.kill()
        return code if code is not None else -signal.SIGKILL

    def kill(self) -> None:
        """SIGKILL the whole process group: main process, pool processes, embedded beat."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def rss_bytes(self) -> int:
        """Resident memory of the whole process group (main, pool, beat)."""
        return sum(self.rss_by_process())

    def rss_by_process(self) -> list[int]:
        """Resident memory of each process of the group, in bytes."""
        sizes = []
        for pid_dir in Path("/proc").iterdir():
            if pid_dir.name.isdigit():
                size = _rss_of_group_member(pid_dir, self.process.pid)
                if size is not None:
                    sizes.append(size)
        return sizes


def _rss_of_group_member(pid_dir: Path, group: int) -> int | None:
    """VmRSS in bytes of the process in ``pid_dir`` if it belongs to process group ``group``."""
    try:
        stat = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
        if int(stat[2]) != group:  # field 5 of /proc/PID/stat: the process group id
            return None
        for line in (pid_dir / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        return None
    return None


OWN_KEY = "<the stack's own key>"


class Workers:
    """Starts workers for one test or scenario, and stops every one of them at the end."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        api_url: str,
        api_key: str,
        directory: Path,
        app_key: str | None = None,
    ) -> None:
        """``app_key``: the DD_APP_KEY workers get by default (None: none, so PATCH and
        DELETE wait)."""
        self.redis_url, self.prefix, self.api_url = redis_url, prefix, api_url
        self.api_key, self.app_key, self.directory = api_key, app_key, directory
        self.started: list[Worker] = []

    def start(
        self,
        *argv: str,
        key: str | None = OWN_KEY,
        app_key: str | None = OWN_KEY,
        wrapper: Sequence[str] = (),
        loglevel: str = "INFO",
        **env: str,
    ) -> Worker:
        """Start ``celery -A workers <argv>`` (default: worker --beat, 2 processes).

        ``key`` is the DD_API_KEY to give it: its own by default, None for none at all;
        ``app_key`` the same for DD_APP_KEY.
        ``wrapper`` is a command the process runs under (``faketime -f -10s``).
        """
        api_key = self.api_key if key == OWN_KEY else key
        application_key = self.app_key if app_key == OWN_KEY else app_key
        if application_key is not None:
            env = {"DD_APP_KEY": application_key, **env}
        worker = Worker(
            list(argv) or ["worker", "--beat", "--concurrency=2"],
            worker_env(self.redis_url, self.prefix, self.api_url, api_key, **env),
            self.directory / f"worker-{len(self.started)}.log",
            self.directory,
            loglevel=loglevel,
            wrapper=wrapper,
        )
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()

    def logs(self) -> str:
        return "\n".join(worker.log() for worker in self.started)


def delete_keys(redis_url: str, *patterns: str) -> int:
    """Delete every key matching ``patterns`` (in chunks: a run may leave 100,000)."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    deleted = 0
    try:
        for pattern in patterns:
            stale = list(client.scan_iter(match=pattern, count=5000))
            for start in range(0, len(stale), 5000):
                deleted += int(client.delete(*stale[start : start + 5000]))
    finally:
        client.close()
    return deleted


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server of our own with AOF (fsync always), that can crash and come back."""

    def __init__(self, password: str | None = None, unix_socket: bool = False) -> None:
        """``password``: require it (``requirepass``); ``unix_socket``: listen on one too."""
        binary = shutil.which("redis-server") or embedded_binary()
        if binary is None:
            raise RuntimeError("no redis-server: install one, or the embedded extra")
        self.binary = binary
        self.port = free_port()
        self.password = password
        self.directory = Path(tempfile.mkdtemp(prefix="dora-redis-"))
        self.socket_path = self.directory / "redis.sock" if unix_socket else None
        auth = f":{quote(password, safe='')}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                *(["--requirepass", self.password] if self.password else []),
                *(
                    ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
                    if self.socket_path
                    else []
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, timeout_s=10, what=f"redis-server on port {self.port}")
        client.close()
        return self

    def crash(self) -> None:
        """SIGKILL: no shutdown, no final save; only what AOF already holds survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        self.crash()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Received:
    """What the stand-in API holds, judged against what was published."""

    delivered: int
    lost: list[str]
    duplicates: int
    rate_limited: int
    requests: int
    resurrections: list[str] = field(default_factory=list)
    """Ids POSTed again after their DELETE (``DoraStandin.resurrections``)."""
    patch_before_post: list[str] = field(default_factory=list)
    """Deployments that got a PATCH request before the API had accepted their POST."""
    superseded: int = 0
    """Deleted ids whose POST never reached the API: their DELETE came first."""


def judge(
    standin: DoraStandin,
    expected: Mapping[str, Mapping[str, Any]],
    *,
    deployments: Mapping[str, Mapping[str, Any]] | None = None,
    deleted: Mapping[str, Collection[str]] | None = None,
) -> Received:
    """Compare the API's final state of each incident (and deployment) with the expected one.

    ``expected`` holds incidents, ``deployments`` deployments (with any PATCHed
    ``change_failure`` and ``remediation``), ``deleted`` maps the stand-in's kinds
    (``dora_failure``, ``dora_deployment``) to the ids whose DELETE was published last.
    Lost: an incident or deployment whose final state at the API is not exactly what was
    published, or a deleted id the API still holds. Duplicates: accepted POSTs that repeated
    a body already accepted for that event. Delivered: every id that ended right.
    """
    deployments = deployments or {}
    deleted = deleted or {}
    held = {kind: standin.latest(kind) for kind in KINDS}
    finals = (("dora_failure", expected), ("dora_deployment", deployments))
    lost = [i for kind, states in finals for i, s in states.items() if held[kind].get(i) != s]
    lost += [i for kind, ids in deleted.items() for i in ids if i in held[kind]]
    requests = standin.requests()
    bodies: Counter[str] = Counter()
    posted: set[tuple[str, str]] = set()  # held at the API now, as far as requests tell
    ever_posted: set[tuple[str, str]] = set()
    patched_early: dict[str, None] = {}
    for request in requests:
        if request.method == "POST" and request.status == 202 and request.attributes is not None:
            bodies[repr(sorted(request.attributes.items()))] += 1
        if request.event_id is None:
            continue
        key = (request.kind, request.event_id)
        if request.method == "POST" and request.status == 202:
            posted.add(key)
            ever_posted.add(key)
        elif request.method == "DELETE" and request.status in (202, 404):
            posted.discard(key)  # gone: a PATCH needs a new POST first
        elif request.method == "PATCH" and key not in posted:
            patched_early[request.event_id] = None
    duplicates = sum(count - 1 for count in bodies.values())
    published = len(expected) + len(deployments) + sum(len(ids) for ids in deleted.values())
    return Received(
        delivered=published - len(lost),
        lost=lost,
        duplicates=duplicates,
        rate_limited=standin.status_counts().get(429, 0),
        requests=len(requests),
        resurrections=standin.resurrections(),
        patch_before_post=list(patched_early),
        superseded=sum((kind, i) not in ever_posted for kind, ids in deleted.items() for i in ids),
    )
