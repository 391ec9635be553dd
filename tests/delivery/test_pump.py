"""The pump in-process: real Redis, the real sender over httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest
import redis.asyncio as aioredis

from forwarder.protocol import RedisKeys
from harness import streams
from tests.delivery.events import FINISH, ID, START, publish
from tests.delivery.fake_api import API_KEY, FakeDatadog, make_pump
from workers.delivery.breaker import BreakerPolicy

pytestmark = pytest.mark.anyio


async def test_start_and_finish_coalesce_into_one_request(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """Published together, a start and its finish cost one request with the merged state."""
    api = FakeDatadog()
    await publish(client, keys, START, FINISH, START)
    report = await make_pump(client, keys, api).run(0.3)
    assert report.outcomes == {"delivered": 1}
    (body,) = api.bodies()
    assert body["finished_at"] == 1_700_000_600_000_000_000
    assert body["services"] == ["checkout"]
    request = api.requests[0]
    assert request.url.path == "/api/v2/dora/failure"
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["Content-Type"] == "application/json"


async def test_server_error_then_success_is_delivered(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """5xx answers are retried with backoff until a 2xx."""
    api = FakeDatadog(503, 500)
    await publish(client, keys, START)
    report = await make_pump(client, keys, api).run(0.6)
    assert report.outcomes == {"retry": 2, "delivered": 1}
    assert len(api.requests) == 3
    state = await client.hgetall(keys.incident(ID))
    assert state[b"sent"] == state[b"version"]
    assert b"attempt" not in state


async def test_bad_request_is_dead_lettered_with_the_body(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """A 400 is not retried; its dead letter holds status, response and state."""
    api = FakeDatadog(400)
    await publish(client, keys, START)
    report = await make_pump(client, keys, api).run(0.3)
    assert report.outcomes == {"dead": 1}
    ((_, letter),) = await streams.entries_async(client, keys.dead)
    detail = json.loads(letter[b"detail"])
    assert detail["status"] == 400
    assert "status 400" in detail["response"]
    assert detail["attributes"]["id"] == ID
    assert letter[b"reason"] == b"rejected by Datadog (HTTP 400)"
    assert API_KEY.encode() not in letter[b"detail"]


async def test_forbidden_pauses_the_fleet_and_keeps_the_event(
    client: aioredis.Redis, keys: RedisKeys, caplog: pytest.LogCaptureFixture
) -> None:
    """A 403 closes the gate for everyone (one error logged), nothing is dead-lettered."""
    api = FakeDatadog(403)
    await publish(client, keys, START, {**START, "id": "incident-0000000002"})
    report = await make_pump(client, keys, api, auth_pause_s=30.0).run(0.5)
    assert len(api.requests) == 1  # the probe; nothing else is sent while the gate is closed
    assert report.outcomes == {"retry": 1}
    assert await client.hget(keys.gate, "reason") == b"auth"
    assert await client.xlen(keys.dead) == 0
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "Check DD_API_KEY" in errors[0].getMessage()
    assert API_KEY not in caplog.text


async def test_rate_limit_closes_the_gate_until_reset(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """A 429 with X-RateLimit-Reset stops every send until the reset."""
    api = FakeDatadog(429)
    api.headers = {
        "X-RateLimit-Reset": "30",
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Period": "60",
        "X-RateLimit-Remaining": "0",
    }
    await publish(client, keys, START, {**START, "id": "incident-0000000002"})
    started = time.monotonic()
    await make_pump(client, keys, api).run(0.5)
    # The run ends at its budget, not after the gate's wait (it waited 5 s more before).
    assert time.monotonic() - started < 3.0
    assert len(api.requests) == 1
    gate = await client.hgetall(keys.gate)
    assert gate[b"reason"] == b"rate_limit"
    assert int(gate[b"closed_until_ms"]) - int(gate[b"closed_at_ms"]) == 30_000


async def test_the_end_of_a_rate_limit_pause_is_one_line(
    client: aioredis.Redis, keys: RedisKeys, caplog: pytest.LogCaptureFixture
) -> None:
    """Closed for 1 s by a 429, then open: the pump that finds it over says so, once."""
    api = FakeDatadog(429, 202, 202)
    api.headers = {"X-RateLimit-Reset": "1"}
    await publish(client, keys, START, {**START, "id": "incident-0000000002"})
    caplog.set_level(logging.INFO, logger="dora_forwarder.pump")
    report = await make_pump(client, keys, api).run(2.0)
    reopened = [r for r in caplog.records if " is over" in r.getMessage()]
    assert [r.getMessage() for r in reopened] == [
        "the pause after Datadog's rate limit (HTTP 429) is over: the gate is open"
    ]
    assert reopened[0].levelname == "INFO"
    assert report.outcomes == {"retry": 1, "delivered": 2}


async def test_expired_incident_is_dead_lettered_with_its_attempts(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """Past FORWARDER_MAX_AGE_S of failures an incident becomes a dead letter, saying so."""
    api = FakeDatadog(*([503] * 50))
    await publish(client, keys, START)
    # One incident failing alone: the fleet's breaker must not stand in its way here.
    lenient = BreakerPolicy(failures=1_000)
    await make_pump(client, keys, api, max_age_ms=150, breaker=lenient).run(0.8)
    ((_, letter),) = await streams.entries_async(client, keys.dead)
    assert letter[b"reason"].startswith(b"expired after ")
    assert b"last error: HTTP 503 from Datadog" in letter[b"reason"]
    assert json.loads(letter[b"detail"])["attempts"] >= 2


async def test_stop_releases_claims_at_once(client: aioredis.Redis, keys: RedisKeys) -> None:
    """Asked to stop, a pump gives back what it holds instead of waiting for answers."""
    never, all_sent = asyncio.Event(), asyncio.Event()
    seen: list[httpx.Request] = []

    async def hang(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 5:
            all_sent.set()
        await never.wait()
        raise AssertionError("unreachable")

    await client.hset(keys.gate, "unlimited_ms", 10**15)
    await publish(client, keys, *[{**START, "id": f"incident-{i:012d}"} for i in range(5)])
    pump = make_pump(client, keys, hang, max_in_flight=40)  # starts with 40 / 8 = 5 in flight
    run = asyncio.create_task(pump.run(30.0))
    await asyncio.wait_for(all_sent.wait(), timeout=10)
    assert await client.zcard(keys.inflight) == 5
    pump.request_stop()
    report = await asyncio.wait_for(run, timeout=5)
    assert report.outcomes == {"wait": 5}
    assert await client.zcard(keys.inflight) == 0
    assert await client.zcard(keys.due) == 5


async def test_network_error_is_retried(client: aioredis.Redis, keys: RedisKeys) -> None:
    """A dropped connection is retried, not lost."""
    api = FakeDatadog(error=httpx.ConnectError("connection refused"))
    await publish(client, keys, START)
    report = await make_pump(client, keys, api).run(0.4)
    assert report.outcomes == {"retry": 1, "delivered": 1}
    assert len(api.requests) == 2


async def test_finish_without_start_is_not_sent(client: aioredis.Redis, keys: RedisKeys) -> None:
    """A finish alone waits for its start; nothing incomplete reaches Datadog."""
    api = FakeDatadog()
    await publish(client, keys, FINISH)
    await make_pump(client, keys, api).run(0.2)
    assert api.requests == []
    assert await client.zscore(keys.due, ID) is not None


async def test_orphan_finish_is_dead_lettered_after_the_wait(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """A finish whose start never comes becomes a dead letter saying so."""
    api = FakeDatadog()
    await publish(client, keys, FINISH)
    await make_pump(client, keys, api, orphan_wait_ms=50).run(0.4)
    assert api.requests == []
    ((_, letter),) = await streams.entries_async(client, keys.dead)
    assert b"never arrived" in letter[b"reason"]


async def test_merged_state_breaking_a_rule_is_dead_lettered_unsent(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """A finish earlier than its stored start is caught before it costs a request."""
    api = FakeDatadog()
    await publish(client, keys, START, {"id": ID, "finished_at": 1_600_000_000})
    await make_pump(client, keys, api).run(0.3)
    assert api.requests == []
    ((_, letter),) = await streams.entries_async(client, keys.dead)
    assert b"finished_at: is before started_at" in letter[b"reason"]


async def test_many_incidents_with_bounded_concurrency(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """Hundreds of incidents are each delivered once with their final state."""
    api = FakeDatadog()
    events = []
    for i in range(300):
        incident = f"incident-{i:012d}"
        events.append({"id": incident, "started_at": 1_700_000_000 + i, "team": "t"})
        events.append({"id": incident, "finished_at": 1_700_000_500 + i})
    await publish(client, keys, *events)
    report = await make_pump(client, keys, api, ingest_batch=50).run(1.5)
    assert report.outcomes.get("delivered") == len(api.requests)
    latest = {b["id"]: b for b in api.bodies()}
    assert len(latest) == 300
    assert all("finished_at" in body for body in latest.values())
    assert await client.zcard(keys.due) == 0
    assert await client.zcard(keys.inflight) == 0


async def test_lost_stream_and_group_are_recreated(client: aioredis.Redis, keys: RedisKeys) -> None:
    """A Redis that restarted without persistence lost the group: ingest recreates it."""
    api = FakeDatadog()
    pump = make_pump(client, keys, api)
    await publish(client, keys, START)
    await pump.run(0.3)
    await client.delete(keys.ingest)  # what a memory-only Redis looks like after a restart
    second = {**START, "id": "incident-0000000002"}
    await publish(client, keys, second)
    report = await pump.run(0.5)
    assert report.redis_error is None
    assert {b["id"] for b in api.bodies()} == {ID, "incident-0000000002"}
