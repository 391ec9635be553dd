"""A worker that starts lifts a pause for a refused key, in one step, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

from forwarder.protocol import GateField, RedisKeys
from workers.delivery.gate import REASON_AUTH, REASON_RATE_LIMIT
from workers.delivery.store import lift_auth_pause

CLOSED_UNTIL_MS = 10**13


@pytest.fixture(params=["real", "fake"])
def client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Any]:
    made = redis.Redis.from_url(redis_url) if request.param == "real" else fakeredis.FakeRedis()
    yield made
    made.close()


def test_a_pause_for_a_refused_key_is_lifted(client: Any, keys: RedisKeys) -> None:
    """The gate closed for ``auth`` reopens at once; the reason stays for ``status``."""
    client.hset(
        keys.gate,
        mapping={GateField.REASON: REASON_AUTH, GateField.CLOSED_UNTIL_MS: CLOSED_UNTIL_MS},
    )
    assert lift_auth_pause(client, keys)
    assert client.hmget(keys.gate, [GateField.CLOSED_UNTIL_MS, GateField.REASON]) == [
        b"0",
        REASON_AUTH.encode(),
    ]


@pytest.mark.parametrize("closed_until_ms", [0, 1_000])
def test_a_pause_that_has_ended_is_not_lifted_again(
    client: Any, keys: RedisKeys, closed_until_ms: int
) -> None:
    """Over (or marked over by a claim, 0): nothing to lift, and no "refused before" line."""
    client.hset(
        keys.gate,
        mapping={GateField.REASON: REASON_AUTH, GateField.CLOSED_UNTIL_MS: closed_until_ms},
    )
    assert not lift_auth_pause(client, keys)
    assert client.hget(keys.gate, GateField.CLOSED_UNTIL_MS) == str(closed_until_ms).encode()


def test_a_rate_limit_closure_stays(client: Any, keys: RedisKeys) -> None:
    """A 429's closure is Datadog's to lift, not a restart's."""
    client.hset(
        keys.gate,
        mapping={GateField.REASON: REASON_RATE_LIMIT, GateField.CLOSED_UNTIL_MS: CLOSED_UNTIL_MS},
    )
    assert not lift_auth_pause(client, keys)
    assert client.hget(keys.gate, GateField.CLOSED_UNTIL_MS) == str(CLOSED_UNTIL_MS).encode()


def test_nothing_to_lift_on_a_fresh_redis(client: Any, keys: RedisKeys) -> None:
    """Without a gate hash nothing is lifted, and none is made."""
    assert not lift_auth_pause(client, keys)
    assert not client.exists(keys.gate)
