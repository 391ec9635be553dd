"""Replicated acknowledgement through a failover, with real parts: a Sentinel-managed
primary and replica, two real workers, the stand-in API (``bench.failover``).

The replica is cut off from the primary half a second before the primary's SIGKILL, as a
network failure between them would. With ``FORWARDER_PUBLISH_REPLICAS=1`` every publish
that returned is delivered with exactly the state published: those made while the replica
was cut off raised (``ReplicaShortfallError``) and were published again, so none of them
was acknowledged by the primary alone. With 0 replicas, the same run loses what the primary
alone acknowledged: the README's figure comes from this run at 10,000 incidents.
"""

from __future__ import annotations

import pytest

from bench.failover import run
from harness.sentinel import sentinel_binary

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sentinel_binary() is None, reason="needs redis-sentinel (apt-get)"),
]

INCIDENTS = 3_000


def test_with_one_replica_every_acknowledged_publish_survives_the_failover() -> None:
    outcome = run(INCIDENTS, threads=4, replicas=1, workers=2, lag_s=0.5)
    print(outcome.summary())
    assert outcome.acknowledged == INCIDENTS
    assert outcome.lost == []
    assert outcome.wrong == []
    assert outcome.raised > 0, "no publish met the failover: the test proved nothing"


def test_without_replicas_what_the_primary_alone_acknowledged_is_lost() -> None:
    """The hazard the setting closes, measured: not a guess."""
    outcome = run(INCIDENTS, threads=4, replicas=0, workers=2, lag_s=0.5)
    print(outcome.summary())
    assert outcome.wrong == []
    assert outcome.lost, "nothing acknowledged during the cut-off was lost: the cut did not happen"
