"""The fleet's circuit breaker: an API that is down gets probes, not storms (I8).

Pure policy (what answers say, probe spacing, the slow-start window); the scripts on real
Redis and fakeredis (open, probe one at a time, close, nothing backs off alone meanwhile);
one pump against an API that is down and comes back; ``status`` and metrics show it.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from config import load_settings
from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import GateField, RedisKeys
from workers.cli import main
from workers.delivery.backoff import BackoffPolicy
from workers.delivery.breaker import BreakerPolicy, BreakerUpdate, breaker_update, is_outage
from workers.delivery.fold import plan_fold
from workers.delivery.gate import GateUpdate
from workers.delivery.pump import Pump, PumpConfig
from workers.delivery.records import Attempt, Claim, Settlement, Verdict
from workers.delivery.sender import DatadogSender
from workers.delivery.settlement import SettlementPolicy
from workers.delivery.store import Store
from workers.delivery.window import Window
from workers.ops.metrics import FleetCollector

T0 = 1_800_000_000_000
"""A pinned Redis clock (ms)."""
ON_FAKEREDIS_TOO = True
"""Each test using ``client`` runs on the real Redis and on fakeredis (see conftest)."""
POLICY = BreakerPolicy(failures=3, probe_ms=1_000, probe_max_ms=4_000)
LEASE_MS = 60_000


def attempt(status: int | None) -> Attempt:
    return Attempt(status, {}, "", None if status else "ReadTimeout: x")


# --- pure policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outage"),
    [
        *[(None, True), (500, True), (502, True), (503, True), (504, True), (408, True)],
        *[(501, False), (202, False), (400, False), (401, False), (403, False), (429, False)],
    ],
)
def test_only_server_failures_and_silence_say_the_api_is_down(
    status: int | None, outage: bool
) -> None:
    """5xx (not 501), 408 and no answer are outages; 429, 401/403 and other 4xx are not."""
    assert is_outage(attempt(status)) is outage


def test_any_other_answer_in_a_batch_says_the_api_is_up() -> None:
    """A batch counts its outage answers; one other answer marks it healthy."""
    assert breaker_update([]) == BreakerUpdate(0, False)
    assert breaker_update(map(attempt, [503, None, 500])) == BreakerUpdate(3, False)
    assert breaker_update(map(attempt, [503, 429])) == BreakerUpdate(1, True)


def test_probe_spacing_doubles_up_to_its_cap() -> None:
    """1 s, 2 s, 4 s, then the cap, however many probes."""
    assert [POLICY.probe_spacing_ms(n) for n in range(5)] == [1_000, 2_000, 4_000, 4_000, 4_000]
    assert POLICY.probe_spacing_ms(10_000) == 4_000


def test_window_starts_small_grows_per_answer_and_halves_per_outage() -> None:
    """A slow start: 1/8 of the ceiling, +1 per healthy answer, halved per outage answer."""
    window = Window.start(128)
    assert window.size == 16
    grown = window.after(map(attempt, [202] * 16))
    assert grown.size == 32
    assert grown.after(map(attempt, [202] * 500)).size == 128
    assert grown.after(map(attempt, [503])).size == 16
    assert Window.start(128).after(map(attempt, [None] * 10)).size == 16
    assert Window.start(4).size == 1


def test_window_shrinks_back_after_a_quiet_run() -> None:
    """No more than twice the last run's peak in flight, never below the start."""
    busy = Window(128, 128)
    assert busy.after_run(100).size == 128
    assert busy.after_run(3).size == 16
    assert busy.after_run(0).size == 16


# --- the scripts ---------------------------------------------------------------------------


async def due_incidents(store: Store, client: Any, keys: RedisKeys, count: int) -> list[str]:
    ids = [f"incident-breaker-{i:04d}" for i in range(count)]
    for incident in ids:
        event = {"id": incident, "started_at": 1_700_000_000, "team": "ops"}
        await client.xadd(keys.ingest, encode_entry(to_event(event)))
    entries = await store.read("c1", 1_000, None)
    await store.fold(plan_fold(entries), retention_ms=3_600_000, orphan_wait_ms=60_000)
    return ids


async def take(store: Store, at_ms: int, limit: int = 100) -> Any:
    return await store.claim(limit, LEASE_MS, "t", probe_ms=5_000, now_ms=at_ms, breaker=POLICY)


def failed(claim: Claim, status: int | None = 503) -> Settlement:
    """A retry as the settlement policy makes it, with a long backoff of its own."""
    return Settlement(
        claim.incident_id,
        claim.version,
        Verdict.RETRY,
        delay_ms=300_000,
        reason=f"HTTP {status}",
        sent_at_ms=claim.claimed_at_ms,
        outage=is_outage(attempt(status)),
    )


async def settle(store: Store, at_ms: int, claims: list[Claim], status: int | None) -> Any:
    answers = [attempt(status)] * len(claims)
    if status is not None and 200 <= status < 300:
        settlements = [
            Settlement(c.incident_id, c.version, Verdict.DELIVERED, sent_at_ms=c.claimed_at_ms)
            for c in claims
        ]
    else:
        settlements = [failed(c, status) for c in claims]
    return await store.settle(
        "t",
        settlements,
        GateUpdate(answered=True),
        now_ms=at_ms,
        breaker_update=breaker_update(answers),
        breaker=POLICY,
    )


@pytest.mark.anyio
async def test_outage_opens_the_breaker_probes_one_at_a_time_and_closes(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """3 failures in a row open it; then one probe per spacing; a 2xx reopens everything."""
    await due_incidents(store, client, keys, 10)
    first = (await take(store, T0, limit=2)).claims
    result = await settle(store, T0 + 10, first, 503)
    assert not result.breaker_opened  # 2 < 3
    assert await client.zscore(keys.due, first[0].incident_id) >= T0 + 300_000  # own backoff
    second = (await take(store, T0 + 20, limit=2)).claims
    result = await settle(store, T0 + 30, second, None)
    assert result.breaker_opened
    # Failures settled as it opens stay due now, held back by the breaker, not their backoff.
    assert await client.zscore(keys.due, second[0].incident_id) == T0 + 30
    held = await take(store, T0 + 40)
    assert (held.claims, held.gate_reason, held.wait_ms) == ([], "breaker", 990)
    probe = await take(store, T0 + 1_030)
    assert len(probe.claims) == 1
    in_flight = await take(store, T0 + 3_030)  # its time has come, but the probe is out
    assert (in_flight.claims, in_flight.gate_reason, in_flight.wait_ms) == ([], "breaker", 100)
    result = await settle(store, T0 + 3_040, probe.claims, 503)
    assert not result.breaker_closed
    assert await client.zscore(keys.due, probe.claims[0].incident_id) == T0 + 3_040
    second_probe = await take(store, T0 + 3_050)
    assert len(second_probe.claims) == 1
    assert (await take(store, T0 + 3_050 + 4_000 - 1)).claims == []  # 1 s, 2 s, then 4 s
    result = await settle(store, T0 + 3_100, second_probe.claims, 202)
    assert result.breaker_closed
    rest = await take(store, T0 + 3_200)
    assert (len(rest.claims), rest.gate_reason) == (9 - len(first), "")
    gate = await client.hgetall(keys.gate)
    assert gate[GateField.BREAKER_FAILURES.encode()] == b"0"
    assert GateField.BREAKER_OPENED_MS.encode() not in gate
    stats = await client.hgetall(keys.stats)
    assert (stats[b"breaker_opened"], stats[b"breaker_probes"]) == (b"1", b"2")


@pytest.mark.anyio
async def test_an_open_breaker_holds_a_timed_out_request_until_it_can_no_longer_land(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A timeout (in doubt) settled while the breaker is open is due at its lease's end.

    Sent again sooner, it could be overtaken by the first request landing late, and would be
    owed once more; the API looks down anyway. A 503 (not in doubt) stays due at once.
    """
    await due_incidents(store, client, keys, 4)
    claims = (await take(store, T0, limit=4)).claims
    timed_out = [
        Settlement(
            c.incident_id,
            c.version,
            Verdict.RETRY,
            reason="network error: ReadTimeout",
            sent_at_ms=c.claimed_at_ms,
            doubt=True,
            outage=True,
        )
        for c in claims[:3]
    ]
    refused = failed(claims[3], 503)
    result = await store.settle(
        "t",
        [*timed_out, refused],
        GateUpdate(answered=True),
        now_ms=T0 + 1_000,
        breaker_update=breaker_update([attempt(None)] * 3 + [attempt(503)]),
        breaker=POLICY,
    )
    assert result.breaker_opened
    for item in timed_out:
        assert await client.zscore(keys.due, item.incident_id) == T0 + LEASE_MS
    assert await client.zscore(keys.due, refused.incident_id) == T0 + 1_000


@pytest.mark.anyio
async def test_answers_that_are_not_outages_keep_it_closed(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A 429 or a 400 between 503s resets the count: limits and bad events are no outage."""
    await due_incidents(store, client, keys, 10)
    for status in (503, 503, 429, 503, 503, 400, 503, 503):
        claims = (await take(store, T0, limit=1)).claims
        result = await settle(store, T0, claims, status)
        assert not result.breaker_opened
        await client.zadd(keys.due, {claims[0].incident_id: T0})  # due again, for the next
    assert (await take(store, T0, limit=1)).gate_reason == ""


@pytest.mark.anyio
async def test_probe_spacing_in_lua_follows_the_policy(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """The script spaces probes as BreakerPolicy.probe_spacing_ms says, up to its cap."""
    await due_incidents(store, client, keys, 3)
    claims = (await take(store, T0, limit=3)).claims
    await settle(store, T0, claims, 503)
    at = T0 + POLICY.probe_spacing_ms(0)
    for probes in range(1, 6):
        (probe,) = (await take(store, at)).claims
        await settle(store, at + 1, [probe], 503)
        spacing = POLICY.probe_spacing_ms(probes)
        assert (await take(store, at + spacing - 1)).wait_ms == 1
        at += spacing


# --- a pump against an API that is down, then back -------------------------------------------


class DownThenUp:
    """Answers 503 while ``down``, 202 after; counts requests."""

    def __init__(self) -> None:
        self.down = True
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.down:
            return httpx.Response(503, json={"errors": ["unavailable"]})
        return httpx.Response(202, json={"data": {"id": "x", "type": "dora_failure"}})


@pytest.mark.anyio
async def test_pump_sends_a_handful_to_a_dead_api_then_everything_once_it_is_back(
    redis_url: str, keys: RedisKeys
) -> None:
    """200 incidents meet a dead API: a slow start and the breaker keep requests to a few."""
    client = aioredis.Redis.from_url(redis_url)
    api = DownThenUp()
    sender = DatadogSender(
        base_url="https://api.example.test",
        api_key=SecretStr("breaker-test-key-0123456789"),
        timeout_s=5.0,
        transport=httpx.MockTransport(api),
    )
    config = PumpConfig(
        consumer="c",
        ingest_batch=500,
        max_in_flight=64,
        lease_ms=30_000,
        reclaim_idle_ms=30_000,
        retention_ms=3_600_000,
        policy=SettlementPolicy(backoff=BackoffPolicy(1.0, 300.0)),
        breaker=BreakerPolicy(failures=5, probe_ms=200, probe_max_ms=400),
    )
    pump = Pump(Store(client, keys), sender, config)
    try:
        await client.hset(keys.gate, "unlimited_ms", 10**15)
        for i in range(200):
            event = {"id": f"incident-down-{i:06d}", "started_at": 1_700_000_000, "team": "o"}
            await client.xadd(keys.ingest, encode_entry(to_event(event)))
        await pump.run(1.5)
        # 64 / 8 = 8 in the first round, then probes 0.2 s, 0.4 s, 0.4 s ... apart.
        assert api.requests <= 8 + 6
        assert await client.hexists(keys.gate, GateField.BREAKER_OPENED_MS)
        api.down = False
        report = await pump.run(3.0)
        assert report.outcomes.get("delivered") == 200
        assert not await client.hexists(keys.gate, GateField.BREAKER_OPENED_MS)
    finally:
        await sender.aclose()
        await client.aclose()


# --- status and metrics show it --------------------------------------------------------------


def test_status_and_metrics_show_an_open_breaker(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    prefix: str,
    keys: RedisKeys,
    sync_redis: redis.Redis,
) -> None:
    """status (table and JSON) and the fleet gauges say it is open, since when, and its probes."""
    now_s, _ = sync_redis.time()
    now_ms = int(now_s) * 1000
    sync_redis.hset(
        keys.gate,
        mapping={
            GateField.BREAKER_OPENED_MS: now_ms - 5_000,
            GateField.BREAKER_FAILURES: 12,
            GateField.BREAKER_PROBES: 3,
            GateField.BREAKER_PROBE_AT_MS: now_ms + 4_000,
        },
    )
    sync_redis.hset(keys.stats, "breaker_opened", 2)
    monkeypatch.setenv("FORWARDER_REDIS_URL", redis_url)
    monkeypatch.setenv("FORWARDER_KEY_PREFIX", prefix)
    assert main(["status"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("circuit"))
    assert "open since " in line
    assert "3 probe(s), next at " in line
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["breaker_open"] is True
    assert (data["breaker_failures"], data["breaker_probes"]) == (12, 3)
    assert data["breaker_next_probe_ms"] == now_ms + 4_000
    registry = CollectorRegistry()
    registry.register(FleetCollector(load_settings(redis_url=redis_url, key_prefix=prefix)))
    assert registry.get_sample_value("dora_forwarder_breaker_open") == 1
    assert registry.get_sample_value("dora_forwarder_breaker_consecutive_failures") == 12
    assert registry.get_sample_value("dora_forwarder_breaker_probes") == 3
    assert registry.get_sample_value("dora_forwarder_breaker_opened_total") == 2
    sync_redis.hdel(keys.gate, GateField.BREAKER_OPENED_MS)
    assert main(["status"]) == 0
    assert "circuit breaker             closed  (12 failed" in capsys.readouterr().out
