"""A Redis primary with one replica, both our own processes on loopback.

The replica is a ``RedisServer`` told ``REPLICAOF`` the primary once it answers, so that it
can be stopped (SIGSTOP: connected but silent, as a hung machine), killed and started again.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from harness.stack import RedisServer, wait_until


class ReplicatedRedis:
    """``primary`` and ``replica``; ``url`` is the primary's."""

    def __init__(self) -> None:
        self.primary = RedisServer()
        self.replica = RedisServer()

    @property
    def url(self) -> str:
        return self.primary.url

    def start(self) -> ReplicatedRedis:
        self.primary.start()
        self.start_replica()
        return self

    def start_replica(self) -> None:
        """Start (or restart) the replica and wait until the primary counts it online."""
        if self.replica.process is None:
            self.replica.start()
        with redis.Redis.from_url(self.replica.url) as client:
            client.replicaof("127.0.0.1", str(self.primary.port))
        wait_until(self.replica_online, timeout_s=30, what="the replica in sync")

    def replica_online(self) -> bool:
        """Whether the primary has the replica connected and in sync."""
        with redis.Redis.from_url(self.primary.url) as client:
            info = client.info("replication")
        replica = info.get("slave0")
        return isinstance(replica, dict) and replica.get("state") == "online"

    def kill_replica(self) -> None:
        """SIGKILL the replica: the primary sees it gone."""
        self.replica.crash()

    @contextmanager
    def replica_frozen(self) -> Iterator[None]:
        """SIGSTOP the replica for the block: still connected, acknowledging nothing."""
        assert self.replica.process is not None
        pid = self.replica.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()
