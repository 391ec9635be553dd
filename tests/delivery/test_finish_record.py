"""A delivered finish outlives its incident's state (I2), against real Redis and the scripts.

When a 2xx delivers a state with ``finished_at``, settle.lua keeps a compact record of it for
``FORWARDER_FINISHED_RETENTION_S``. When a state has to be created again after it expired,
fold.lua merges the record in: a late duplicate of the start costs no request (the claim's
policy sees the state is the one Datadog holds), a late start that changes something is
sent with the finish, never as a start-only state; a late copy of the finish costs nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from config import Settings
from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import RedisKeys, state_id
from tests.delivery.expiry_helpers import wait_for
from workers.delivery.fold import plan_fold
from workers.delivery.gate import GateUpdate
from workers.delivery.operations import ApiRequest
from workers.delivery.records import Claim, Settlement, Verdict
from workers.delivery.settlement import SettlementPolicy, before_sending, delivered, state_digest
from workers.delivery.store import DEFAULT_FINISHED_RETENTION_MS, DEFAULT_RETENTION_MS, Store

pytestmark = pytest.mark.anyio

ID = "incident-finish-0001"
START = {"id": ID, "started_at": 1_700_000_000, "services": ["checkout"], "env": "prod"}
FINISH = {"id": ID, "finished_at": 1_700_000_600}
FINISHED_NS = 1_700_000_600 * 10**9
RETENTION_MS = 300
FINISHED_RETENTION_MS = 3_600_000
ORPHAN_WAIT_MS = 60_000


async def fold(store: Store, client: Any, *events: dict[str, Any], kind: str = "failure") -> None:
    for event in events:
        await client.xadd(store.keys.ingest, encode_entry(to_event(event, kind)))
    entries = await store.read("c1", 100, None)
    await store.fold(plan_fold(entries), retention_ms=RETENTION_MS, orphan_wait_ms=ORPHAN_WAIT_MS)


async def claim(store: Store, now_ms: int | None = None) -> list[Claim]:
    return (await store.claim(10, 60_000, "t", probe_ms=5_000, now_ms=now_ms)).claims


async def deliver(store: Store) -> list[Claim]:
    """Claim what is due and settle every claim as a 2xx."""
    claims = await claim(store)
    await store.settle(
        "t",
        [delivered(c) for c in claims],
        GateUpdate(),
        retention_ms=RETENTION_MS,
        finished_retention_ms=FINISHED_RETENTION_MS,
    )
    return claims


async def delivered_then_expired(store: Store, client: Any, keys: RedisKeys) -> None:
    """Start and finish delivered together; the state then expires for real."""
    await fold(store, client, START, FINISH)
    assert [c.incident_id for c in await deliver(store)] == [ID]
    await wait_for(lambda: client.exists(keys.incident(ID)), False, what="the state to expire")


async def test_late_duplicate_start_after_expiry_costs_no_request(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A start published again after its finished state expired is settled without a request."""
    await delivered_then_expired(store, client, keys)
    await fold(store, client, START)
    (late,) = await claim(store)
    assert late.attributes["finished_at"] == FINISHED_NS
    settlement = before_sending(late, SettlementPolicy())
    assert isinstance(settlement, Settlement), "a request would be sent"
    assert settlement.verdict is Verdict.DELIVERED
    await store.settle("t", [settlement], GateUpdate(), retention_ms=RETENTION_MS)
    assert (await client.zcard(keys.due), await client.zcard(keys.inflight)) == (0, 0)
    assert 0 < await client.pttl(keys.incident(ID)) <= RETENTION_MS


async def test_late_start_with_a_change_is_sent_with_the_finish(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A late start that changes a field is sent merged with the remembered finish."""
    await delivered_then_expired(store, client, keys)
    await fold(store, client, {**START, "env": "staging"})
    (late,) = await claim(store)
    assert late.attributes["finished_at"] == FINISHED_NS
    assert late.attributes["env"] == "staging"
    assert isinstance(before_sending(late, SettlementPolicy()), ApiRequest)  # sent


async def test_late_duplicate_finish_after_expiry_costs_nothing(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A finish published again after expiry neither waits for a start nor dies as an orphan."""
    await delivered_then_expired(store, client, keys)
    await fold(store, client, FINISH)
    after_orphan_wait = await store.redis_time_ms() + 2 * ORPHAN_WAIT_MS
    assert await claim(store, now_ms=after_orphan_wait) == []
    assert await client.xlen(keys.dead) == 0


async def test_later_finish_after_expiry_wins_over_the_remembered_one(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A finish corrected after expiry, then its start again: both sent, the newer finish."""
    await delivered_then_expired(store, client, keys)
    await fold(store, client, {**FINISH, "finished_at": 1_700_000_900}, START)
    (late,) = await claim(store)
    assert late.attributes["finished_at"] == 1_700_000_900 * 10**9
    assert isinstance(before_sending(late, SettlementPolicy()), ApiRequest)  # sent


async def test_delivered_finish_is_recorded_for_its_own_horizon(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A 2xx for a finished state writes the record, expiring long after the state."""
    await fold(store, client, START, FINISH)
    await deliver(store)
    ttl = await client.pttl(keys.finished(ID))
    assert RETENTION_MS < ttl <= FINISHED_RETENTION_MS
    assert str(FINISHED_NS).encode() in await client.get(keys.finished(ID))


async def test_start_only_delivery_records_no_finish(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Nothing is remembered for an incident Datadog holds unfinished."""
    await fold(store, client, START)
    await deliver(store)
    assert await client.exists(keys.finished(ID)) == 0


async def test_deployment_keeps_no_finish_record(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A deployment's every POST carries both times, so nothing needs remembering."""
    deployment = {"id": ID, "service": "api", "started_at": 1, "finished_at": 2}
    await fold(store, client, deployment, kind="deployment")
    assert len(await deliver(store)) == 1
    assert await client.exists(keys.finished(state_id("deployment", ID))) == 0
    assert await client.keys(keys.finished("*")) == []


def test_default_horizons_match_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's defaults are the documented settings' defaults."""
    for name in ("FORWARDER_RETENTION_S", "FORWARDER_FINISHED_RETENTION_S"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.retention_s * 1000 == DEFAULT_RETENTION_MS
    assert settings.finished_retention_s * 1000 == DEFAULT_FINISHED_RETENTION_MS
    assert settings.finished_retention_s >= 400 * 86_400


def test_digest_depends_on_content_not_order() -> None:
    """Equal attributes give equal digests whatever their order; any change gives another."""
    state = {"id": ID, "started_at": 1, "services": ["a"], "finished_at": 2}
    assert state_digest(state) == state_digest(dict(reversed(state.items())))
    assert state_digest(state) != state_digest({**state, "env": "prod"})
    assert len(state_digest(state)) == 16


def test_remembered_state_needs_no_request_and_another_does() -> None:
    """A claim equal to what Datadog holds settles as delivered; a different one is sent."""
    state = {"id": ID, "started_at": 1, "services": ["a"], "finished_at": 2}
    remembered = Claim(ID, 1, 0, 0, 0, None, state, remembered_digest=state_digest(state))
    settled = before_sending(remembered, SettlementPolicy())
    assert isinstance(settled, Settlement)
    assert (settled.verdict, settled.digest) == (Verdict.DELIVERED, state_digest(state))
    changed = Claim(ID, 1, 0, 0, 0, None, {**state, "env": "prod"}, remembered_digest="0" * 16)
    assert isinstance(before_sending(changed, SettlementPolicy()), ApiRequest)
