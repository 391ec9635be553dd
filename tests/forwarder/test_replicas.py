"""Replicated acknowledgement, without a replica: the count, its checks, the settings' rule,
and what a Redis that does not know ``WAIT`` (fakeredis) makes of it. The real primary and
replica are in ``tests/system/test_replicas.py``."""

from __future__ import annotations

import os

import fakeredis
import pytest

from config import SettingsError, load_settings
from forwarder import Publisher, PublishError, ReplicaShortfallError
from forwarder.protocol import RedisKeys
from forwarder.replicas import Replicas

INCIDENT = {"id": "incident-replicas-unit1", "started_at": 1_700_000_000, "team": "t"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("FORWARDER_", "DD_")):
            monkeypatch.delenv(name)


def test_counts_and_timeouts_are_checked() -> None:
    """A negative count or a timeout of 0 is refused; a tiny one never rounds to WAIT's 0
    (which would mean "forever")."""
    with pytest.raises(ValueError, match="0 or more"):
        Replicas.of(-1, 1.0)
    with pytest.raises(ValueError, match="more than 0"):
        Replicas.of(1, 0)
    assert Replicas.of(1, 0.0001).timeout_ms == 1
    assert Replicas.of(2, 0.5) == Replicas(2, 500)


def test_a_short_count_raises_with_the_figures() -> None:
    """Fewer than wanted: ``ReplicaShortfallError`` (a ``PublishError``) saying how many."""
    Replicas(1, 500).check(1)
    Replicas(1, 500).check(2)
    with pytest.raises(ReplicaShortfallError) as raised:
        Replicas(2, 500).check(1)
    assert isinstance(raised.value, PublishError)
    assert (raised.value.acknowledged, raised.value.wanted, raised.value.timeout_ms) == (1, 2, 500)
    assert str(raised.value).startswith(
        "Redis stored the event but only 1 of 2 replica(s) acknowledged it within 500 ms"
    )


def test_the_socket_must_outlast_the_wait() -> None:
    """``from_url`` refuses a WAIT as long as its socket timeout: the socket would cut it."""
    with pytest.raises(ValueError, match="must be less than the socket timeout"):
        Publisher.from_url("redis://127.0.0.1:1/0", timeout_s=0.5, replicas=1)
    Publisher.from_url("redis://127.0.0.1:1/0", timeout_s=0.5, replicas=0).close()


def test_a_redis_without_wait_fails_the_publish_but_stores_the_event() -> None:
    """WAIT refused (fakeredis knows no WAIT): a ``PublishError`` that is no shortfall and
    says the event is stored; the event is in the stream. With 0 replicas no WAIT is sent."""
    client = fakeredis.FakeRedis()
    keys = RedisKeys("unit")
    with pytest.raises(PublishError) as raised:
        Publisher(client, key_prefix="unit", replicas=1).publish(INCIDENT)
    assert not isinstance(raised.value, ReplicaShortfallError)
    assert "stored the event but could not count the replicas" in str(raised.value)
    assert client.xlen(keys.ingest) == 1
    Publisher(client, key_prefix="unit").publish_many([INCIDENT, INCIDENT])
    assert client.xlen(keys.ingest) == 3


@pytest.mark.usefixtures("clean_env")
def test_the_wait_must_end_before_the_publish_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """With replicas wanted, a WAIT as long as the socket timeout is refused at start,
    naming both variables; without, the timeout is not looked at."""
    monkeypatch.setenv("FORWARDER_PUBLISH_REPLICAS_TIMEOUT_S", "1")
    assert load_settings().publish_replicas == 0
    monkeypatch.setenv("FORWARDER_PUBLISH_REPLICAS", "1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "FORWARDER_PUBLISH_REPLICAS_TIMEOUT_S (1 s)" in str(caught.value)
    assert "FORWARDER_PUBLISH_TIMEOUT_S (1 s)" in str(caught.value)
    monkeypatch.setenv("FORWARDER_PUBLISH_TIMEOUT_S", "2")
    settings = load_settings()
    assert (settings.publish_replicas, settings.publish_replicas_timeout_s) == (1, 1.0)
