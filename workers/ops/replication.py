"""Which Redis answers, and its replicas, for ``status`` and the metrics.

Read from ``INFO replication`` (queued in ``read_status``'s pipeline) and from the address
of a pooled connection: the server the forwarder writes to, whatever the URL named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis


@dataclass(frozen=True, slots=True)
class Replication:
    """The server in use and what it says of replication."""

    server: str
    """``host:port`` (or ``unix:/path``) of the Redis the client talks to."""
    role: str
    """``master``, or ``slave`` (a replica: the forwarder cannot write there)."""
    connected_replicas: int
    """Replicas connected to it now (``connected_slaves``)."""
    replicas: tuple[str, ...]
    """Each as ``ip:port state, lag N s`` (lag: seconds since its last acknowledgement)."""
    wanted: int
    """``FORWARDER_PUBLISH_REPLICAS``: replicas each write waits for."""
    primary_of_replica: str | None = None
    """When ``server`` is a replica: its primary, ``host:port (link up|down)``."""

    @property
    def short(self) -> bool:
        """Fewer replicas connected than writes wait for: publishes fail until they are back."""
        return self.connected_replicas < self.wanted


def server_address(client: redis.Redis) -> str:
    """Where ``client``'s connections go: a pooled connection's address (it connects it)."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        path = getattr(connection, "path", None)
        if path:
            return f"unix:{path}"
        return f"{getattr(connection, 'host', '?')}:{getattr(connection, 'port', '?')}"
    finally:
        pool.release(connection)


def from_info(server: str, info: dict[str, Any], wanted: int) -> Replication:
    """The ``Replication`` that ``INFO replication`` (as redis-py parses it) describes."""
    role = str(info.get("role", "?"))
    replicas = []
    for index in range(int(info.get("connected_slaves", 0))):
        replica = info.get(f"slave{index}")
        if isinstance(replica, dict):
            replicas.append(
                f"{replica.get('ip')}:{replica.get('port')} {replica.get('state')}, "
                f"lag {replica.get('lag')} s"
            )
    primary = None
    if role == "slave":
        primary = (
            f"{info.get('master_host')}:{info.get('master_port')} "
            f"(link {info.get('master_link_status')})"
        )
    return Replication(
        server=server,
        role=role,
        connected_replicas=int(info.get("connected_slaves", 0)),
        replicas=tuple(replicas),
        wanted=wanted,
        primary_of_replica=primary,
    )


def describe(replication: Replication) -> list[tuple[str, str]]:
    """``status``'s rows: the server in use, and its replicas against the setting."""
    if replication.role == "slave":
        server = (
            f"{replication.server}: a REPLICA of {replication.primary_of_replica}; "
            "writes fail here: point FORWARDER_REDIS_URL at the primary"
        )
    else:
        server = f"{replication.server} (primary)"
    listed = "; ".join(replication.replicas)
    replicas = f"{replication.connected_replicas} connected" + (f" ({listed})" if listed else "")
    if replication.wanted:
        replicas += f"; each write waits for {replication.wanted} (FORWARDER_PUBLISH_REPLICAS)"
        if replication.short:
            replicas += ": TOO FEW, publishes fail until enough are back"
    else:
        replicas += "; writes wait for none (FORWARDER_PUBLISH_REPLICAS=0)"
    return [("redis", server), ("replicas", replicas)]
