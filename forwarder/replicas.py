"""Replicated acknowledgement: a write counts once ``WAIT`` saw it on enough replicas.

Redis replicates asynchronously: a primary that dies takes with it the writes its replicas
had not received yet, and a failover promotes a replica without them. ``WAIT N timeout``
blocks until ``N`` replicas acknowledged every write *made on the same connection* before it
(or the timeout passed) and answers how many did. So the writes and their ``WAIT`` go in one
pipeline, which redis-py sends on one connection, in one round trip.

``WAIT`` cannot undo a write: when too few replicas answer, the primary still holds it. The
producer is told so (``ReplicaShortfallError``), and publishing again is harmless (the same id
folds into the same state).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from forwarder._errors import PublishError, ReplicaShortfallError

if TYPE_CHECKING:
    import redis

    from forwarder.entry import EntryFields

DEFAULT_REPLICAS_TIMEOUT_S: Final = 0.5
"""``FORWARDER_PUBLISH_REPLICAS_TIMEOUT_S``'s default (see ``config.settings``)."""


@dataclass(frozen=True, slots=True)
class Replicas:
    """How many replicas must acknowledge a write (0: none, no ``WAIT``), and for how long."""

    wanted: int = 0
    timeout_ms: int = int(DEFAULT_REPLICAS_TIMEOUT_S * 1000)

    @classmethod
    def of(cls, wanted: int, timeout_s: float) -> Replicas:
        """From the settings' units; a ``ValueError`` for a negative count or timeout."""
        if wanted < 0:
            raise ValueError(f"replicas must be 0 or more, not {wanted}")
        if not timeout_s > 0:
            raise ValueError(f"replicas_timeout_s must be more than 0, not {timeout_s}")
        # WAIT's timeout 0 means "forever": never let a tiny timeout round down to it.
        return cls(wanted, max(1, round(timeout_s * 1000)))

    def check_socket_timeout(self, socket_timeout_s: float) -> None:
        """A ``ValueError`` unless the socket outlasts the ``WAIT`` (only when one is made)."""
        if self.wanted and self.timeout_ms >= socket_timeout_s * 1000:
            raise ValueError(
                f"replicas_timeout_s ({self.timeout_ms / 1000:g} s) must be less than the "
                f"socket timeout ({socket_timeout_s:g} s): it would give up before WAIT answers"
            )

    def check(self, reply: object) -> None:
        """Raise unless ``WAIT``'s ``reply`` counts ``wanted`` replicas (an error reply too)."""
        if isinstance(reply, Exception):
            raise PublishError(
                f"Redis stored the event but could not count the replicas that hold it "
                f"({reply}); publish again: a repeat is harmless (the same id folds into the "
                "same state)"
            ) from reply
        acknowledged = int(reply)  # type: ignore[call-overload]  # WAIT answers an integer
        if acknowledged < self.wanted:
            raise ReplicaShortfallError(acknowledged, self.wanted, self.timeout_ms)


def xadd_acknowledged(
    client: redis.Redis,
    stream: str,
    entries: Sequence[EntryFields],
    replicas: Replicas,
) -> None:
    """``XADD`` each entry then ``WAIT``, in one pipeline on one connection; raise as
    ``Replicas.check`` does, or redis-py's error if an ``XADD`` was refused."""
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(stream, entry)
    pipe.wait(replicas.wanted, replicas.timeout_ms)
    *added, acknowledged = pipe.execute(raise_on_error=False)
    for reply in added:
        if isinstance(reply, Exception):
            raise reply
    replicas.check(acknowledged)
