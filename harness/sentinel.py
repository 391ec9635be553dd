"""A Redis primary, a replica and three sentinels on loopback: a failover to test against.

Each server is a subprocess in its own process group, with its files in a temporary
directory and a free port on 127.0.0.1. The sentinels notice a dead primary after
``DOWN_AFTER_MS`` and promote the replica; ``kill_primary`` then ``wait_failover`` time it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, cast
from urllib.parse import quote

import redis

from harness.stack import free_port, wait_until

MASTER_NAME: Final = "dora-primary"
DOWN_AFTER_MS: Final = 1000
"""How long a primary must not answer before a sentinel calls it down (Redis: 30 s)."""
FAILOVER_TIMEOUT_MS: Final = 3000
QUORUM: Final = 2
SENTINELS: Final = 3


def sentinel_binary() -> str | None:
    """Debian's ``redis-sentinel`` (``redis-server --sentinel`` under another name)."""
    return shutil.which("redis-sentinel")


class SentinelCluster:
    """One primary, one replica (``--replicaof``), three sentinels watching ``MASTER_NAME``.

    ``password``: the data nodes require it (``requirepass``, ``masterauth``) and the
    sentinels log in with it (``sentinel auth-pass``); the sentinels need none themselves.
    """

    def __init__(self, password: str | None = None, *, appendonly: bool = True) -> None:
        binary = shutil.which("redis-server")
        sentinel = sentinel_binary()
        if binary is None or sentinel is None:
            raise RuntimeError("needs redis-server and redis-sentinel (apt-get install both)")
        self.server_binary: str = binary
        self.sentinel_binary: str = sentinel
        self.password = password
        self.appendonly = appendonly
        self.directory = Path(tempfile.mkdtemp(prefix="dora-sentinel-"))
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.master_name = MASTER_NAME
        auth = f":{quote(password, safe='')}@" if password else ""
        # The password in the first part only, as in Celery's examples; the database too.
        self.url = ";".join(
            f"sentinel://{auth if index == 0 else ''}127.0.0.1:{port}{'/0' if index == 0 else ''}"
            for index, port in enumerate(self.sentinel_ports)
        )

    # -- life cycle -------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start every server; return once the sentinels know the replica and each other."""
        primary, replica = self.data_ports
        self._start_data_node(primary)
        self._start_data_node(replica, "--replicaof", "127.0.0.1", str(primary))
        for port in self.sentinel_ports:
            self._start_sentinel(port, primary)
        wait_until(self._ready, timeout_s=timeout_s, what="the sentinels to see replica and peers")
        return self

    def _common(self, port: int, name: str) -> list[str]:
        workdir = self.directory / name
        workdir.mkdir(exist_ok=True)
        return ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]

    def _start_data_node(self, port: int, *extra: str) -> None:
        password = self.password
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        argv = [
            self.server_binary,
            *self._common(port, f"redis-{port}"),
            *("--save", "", "--appendonly", "yes" if self.appendonly else "no"),
            *("--appendfsync", "everysec", "--maxmemory-policy", "noeviction"),
            # Redis waits 5 s for more replicas before a first (diskless) sync: not here.
            *("--repl-diskless-sync-delay", "0"),
            *auth,
            *extra,
        ]
        self._spawn(port, argv, f"redis-{port}.log")
        wait_until(lambda: self._answers(port), timeout_s=10, what=f"redis-server :{port}")

    def _start_sentinel(self, port: int, primary: int) -> None:
        # A sentinel rewrites its file (what it learnt): each has its own, in the temp dir.
        config = self.directory / f"sentinel-{port}.conf"
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.password:
            lines.append(f'sentinel auth-pass {MASTER_NAME} "{self.password}"')
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)
        self._spawn(port, [self.sentinel_binary, str(config)], f"sentinel-{port}.log")
        wait_until(lambda: self._answers(port, data=False), timeout_s=10, what=f"sentinel :{port}")

    def _spawn(self, port: int, argv: list[str], log_name: str) -> None:
        with (self.directory / log_name).open("ab") as log:
            self.processes[port] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        """SIGKILL every server still running and remove their files."""
        for port in list(self.processes):
            self._kill(port)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _kill(self, port: int) -> None:
        process = self.processes.pop(port, None)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    # -- what the sentinels say -------------------------------------------------------

    def _client(self, port: int, *, data: bool = True) -> redis.Redis:
        password = self.password if data else None
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            password=password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )

    def _answers(self, port: int, *, data: bool = True) -> bool:
        client = self._client(port, data=data)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _ask_sentinels(self, *command: str) -> object:
        """The first answer of a running sentinel to ``command`` (None if none answers)."""
        for port in self.sentinel_ports:
            if port not in self.processes:
                continue
            client = self._client(port, data=False)
            try:
                return client.execute_command(*command)  # type: ignore[no-untyped-call]
            except redis.RedisError:
                continue
            finally:
                client.close()
        return None

    def _ready(self) -> bool:
        """The replica is in sync, every sentinel sees it and its two peers: a failover can
        promote it without losing what the primary had before."""
        client = self._client(self.data_ports[1])
        try:
            if client.info("replication").get("master_link_status") != "up":
                return False
        except redis.RedisError:
            return False
        finally:
            client.close()
        for port in self.sentinel_ports:
            client = self._client(port, data=False)
            try:
                master = cast(dict[str, Any], client.sentinel_master(MASTER_NAME))
                replicas = client.sentinel_slaves(MASTER_NAME)
            except redis.RedisError:
                return False
            finally:
                client.close()
            if int(master.get("num-other-sentinels", 0)) < SENTINELS - 1:
                return False
            if not any(
                replica.get("is_slave") and not replica.get("is_sdown") for replica in replicas
            ):
                return False
        return True

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels name it (``SENTINEL get-master-addr-by-name``)."""
        answer = self._ask_sentinels("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        if not isinstance(answer, list | tuple) or len(answer) != 2:
            return None
        return int(answer[1])

    def is_master(self, port: int) -> bool:
        """Whether the server on ``port`` answers ``ROLE`` as a master."""
        client = self._client(port)
        try:
            role = client.execute_command("ROLE")  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return False
        finally:
            client.close()
        return bool(role) and role[0] in {b"master", "master"}

    # -- faults -----------------------------------------------------------------------

    def kill_primary(self) -> int:
        """SIGKILL the current primary (no shutdown, no final sync); return its port."""
        port = self.primary_port()
        if port is None:
            raise RuntimeError("no sentinel names a primary")
        self._kill(port)
        return port

    def replica_port(self) -> int:
        """The data node that is not the primary."""
        primary = self.primary_port()
        return next(port for port in self.data_ports if port != primary)

    def pause(self, port: int, paused: bool = True) -> None:
        """SIGSTOP (or SIGCONT) the server on ``port``: a replica that stops reading its
        primary's stream, as a slow or partitioned one does, while its socket stays open."""
        os.killpg(self.processes[port].pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def cut_replication(self) -> None:
        """Close the primary's connections to its replicas (``CLIENT KILL TYPE replica``): what
        the primary writes next reaches no replica until one reconnects. With the replica
        paused first, it cannot, as when the network between them fails."""
        primary = self.primary_port()
        if primary is None:
            raise RuntimeError("no sentinel names a primary")
        client = self._client(primary)
        try:
            client.client_kill_filter(_type="replica")
        finally:
            client.close()

    def restart_as_replica(self, port: int, timeout_s: float = 30.0) -> None:
        """Start the killed node on ``port`` again as a replica of the current primary (as a
        supervisor would restart it); return once it is in sync. With one replica wanted
        (``FORWARDER_PUBLISH_REPLICAS=1``), writes are acknowledged again only from then."""
        primary = self.primary_port()
        if primary is None or primary == port:
            raise RuntimeError("no other primary to follow")
        self._start_data_node(port, "--replicaof", "127.0.0.1", str(primary))

        def in_sync() -> bool:
            client = self._client(port)
            try:
                info = client.info("replication")
            except redis.RedisError:
                return False
            finally:
                client.close()
            return bool(info.get("master_link_status") == "up")

        wait_until(in_sync, timeout_s=timeout_s, what=f"redis-server :{port} to sync as a replica")

    def advertised_primary(self) -> int | None:
        """The primary's port as clients are told it: a sentinel whose ``SENTINEL MASTERS``
        shows it up (neither subjectively nor objectively down), as redis-py requires.

        Not ``get-master-addr-by-name``: mid-failover that already names the replica being
        promoted while ``SENTINEL MASTERS`` still shows the old primary down, and redis-py's
        clients find no master (``MasterNotFoundError``) for about half a second more.
        """
        for port in self.sentinel_ports:
            if port not in self.processes:
                continue
            client = self._client(port, data=False)
            try:
                state = cast(dict[str, Any], client.sentinel_master(MASTER_NAME))
            except redis.RedisError:
                continue
            finally:
                client.close()
            if state.get("is_master") and not (state.get("is_sdown") or state.get("is_odown")):
                return int(state["port"])
        return None

    def wait_failover(self, old_port: int, timeout_s: float = 30.0) -> float:
        """Seconds until a sentinel tells clients of a new primary that answers as a master."""
        started = time.monotonic()

        def promoted() -> bool:
            port = self.advertised_primary()
            return port is not None and port != old_port and self.is_master(port)

        wait_until(promoted, timeout_s=timeout_s, what="the sentinels to promote the replica")
        return time.monotonic() - started
