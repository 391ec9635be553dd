"""Ticks dated and judged by Redis' clock: the stamp, the age check, the count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from config import load_settings
from forwarder.protocol import RedisKeys, StatsField
from workers.celery_app import create_app
from workers.delivery.store import Store
from workers.tasks import (
    PUMP_TASK,
    QUEUE,
    TICK_SENT_HEADER,
    ForwarderCelery,
    tick_sent_ms,
)

NOW_MS = 1_800_000_000_000
MAX_AGE_MS = 10_000


@pytest.fixture
def sender_app(redis_url: str, prefix: str) -> Iterator[ForwarderCelery]:
    """This process as a Celery client of the test's deployment (it sends ticks)."""
    app = create_app(load_settings(redis_url=redis_url, key_prefix=prefix, metrics_port=0))
    yield app
    app.close()


def _queued_headers(client: redis.Redis, keys: RedisKeys) -> list[dict[str, Any]]:
    """The headers of the Celery messages waiting in the queue (kombu's Redis format)."""
    raw = client.lrange(f"{keys.celery_prefix}{QUEUE}", 0, -1)
    return [json.loads(message)["headers"] for message in raw]


def _redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_a_tick_is_dated_by_redis_not_by_the_senders_clock(
    sender_app: ForwarderCelery, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """A sender whose clock is an hour behind stamps Redis TIME and sets no Celery expiry."""
    real_now = sender_app.now
    sender_app.now = lambda: real_now() - timedelta(hours=1)  # type: ignore[method-assign]
    before = _redis_ms(sync_redis)
    entry = sender_app.conf.beat_schedule["pump"]
    sender_app.send_task(entry["task"], **entry.get("options", {}))
    after = _redis_ms(sync_redis)
    (headers,) = _queued_headers(sync_redis, keys)
    assert before <= headers[TICK_SENT_HEADER] <= after
    assert headers["expires"] is None
    assert headers["eta"] is None


def test_a_stamp_given_by_the_sender_is_kept(
    sender_app: ForwarderCelery, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """A tick sent already dated keeps its date (tests age ticks this way)."""
    sender_app.send_task(PUMP_TASK, headers={TICK_SENT_HEADER: 1234})
    (headers,) = _queued_headers(sync_redis, keys)
    assert headers[TICK_SENT_HEADER] == 1234


@pytest.mark.anyio
async def test_only_ticks_older_than_the_expiry_are_dropped_and_counted(
    redis_url: str, keys: RedisKeys
) -> None:
    """Ages are Redis' now minus the stamp; past the expiry a tick is dropped and counted."""
    client = aioredis.Redis.from_url(redis_url)
    store = Store(client, keys)
    try:
        fresh = await store.check_tick(NOW_MS - MAX_AGE_MS, MAX_AGE_MS, now_ms=NOW_MS)
        assert (fresh.age_ms, fresh.dropped, fresh.dropped_total) == (MAX_AGE_MS, False, 0)
        future = await store.check_tick(NOW_MS + 5, MAX_AGE_MS, now_ms=NOW_MS)
        assert (future.age_ms, future.dropped) == (-5, False)
        first = await store.check_tick(NOW_MS - MAX_AGE_MS - 1, MAX_AGE_MS, now_ms=NOW_MS)
        second = await store.check_tick(0, MAX_AGE_MS, now_ms=NOW_MS)
        assert (first.dropped, first.dropped_total) == (True, 1)
        assert (second.age_ms, second.dropped_total) == (NOW_MS, 2)
        assert await client.hget(keys.stats, StatsField.TICKS_DROPPED) == b"2"
        # Without an override, "now" is Redis TIME.
        seconds, micros = await client.time()
        live = await store.check_tick(int(seconds) * 1000 + int(micros) // 1000, MAX_AGE_MS)
        assert 0 <= live.age_ms < MAX_AGE_MS
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("header", "sent_ms"),
    [
        (1_800_000_000_000, 1_800_000_000_000),
        ("1800000000000", 1_800_000_000_000),
        (1.8e12, 1_800_000_000_000),
        (None, None),
        (True, None),
        ("soon", None),
        (float("inf"), None),
        (float("nan"), None),
        ([1], None),
    ],
)
def test_a_missing_or_garbled_stamp_means_undated(header: object, sent_ms: int | None) -> None:
    """An undated tick (sent by hand, or garbled) runs; a stamp is read as ms."""
    assert tick_sent_ms(header) == sent_ms
