"""What a state owes after a lease lapsed with its request unanswered (found by the model test).

A worker that dies (or hangs past its lease) after sending leaves no answer: its request may
have landed. ``done:post`` still holds the digest of what Datadog accepted before it, so a
state folded back to that content was taken as delivered, and Datadog kept the dead
worker's. Now claim.lua forgets ``done:post`` and ``done:patch`` when it takes a lapsed
lease back: the POST goes again.
"""

from __future__ import annotations

from typing import Any

import pytest

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import KIND_DEPLOYMENT, RedisKeys, StateField, state_id
from workers.delivery.fold import plan_fold
from workers.delivery.gate import GateUpdate
from workers.delivery.operations import ApiRequest, Step
from workers.delivery.records import Claim, Settlement, Verdict
from workers.delivery.settlement import SettlementPolicy, before_sending
from workers.delivery.store import Store

ON_FAKEREDIS_TOO = True
"""Each test using ``client`` runs on the real Redis and on fakeredis (see conftest)."""
pytestmark = pytest.mark.anyio

DEPLOYMENT_ID = "deployment-lapse-000001"
STATE = state_id(KIND_DEPLOYMENT, DEPLOYMENT_ID)
T0 = 1_750_000_000_000
LEASE_MS = 30_000
FIRST = {
    "id": DEPLOYMENT_ID,
    "service": "checkout",
    "version": "v2",
    "started_at": 1_700_000_000,
    "finished_at": 1_700_000_090,
}
SECOND = {**FIRST, "version": "v1"}
KNOWN_LIMITS = GateUpdate(unlimited=True, answered=True)
"""The API announces no limits: the gate lets every claim through."""


async def fold(
    store: Store, client: Any, keys: RedisKeys, event: dict[str, Any], at_ms: int
) -> None:
    await client.xadd(keys.ingest, encode_entry(to_event(event, KIND_DEPLOYMENT)))
    entries = await store.read("c1", 100, None)
    await store.fold(
        plan_fold(entries), retention_ms=3_600_000, orphan_wait_ms=60_000, now_ms=at_ms
    )


async def take(store: Store, at_ms: int, holder: str) -> tuple[Claim, ApiRequest | Settlement]:
    result = await store.claim(10, LEASE_MS, holder, probe_ms=5_000, now_ms=at_ms)
    (claim,) = result.claims
    return claim, before_sending(claim, SettlementPolicy())


async def test_a_post_whose_lease_lapsed_goes_again_when_the_state_folds_back(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """FIRST delivered; SECOND sent by a worker that dies; FIRST again: sent, not skipped."""
    await fold(store, client, keys, FIRST, T0)
    _, first = await take(store, T0, "alive")
    assert isinstance(first, ApiRequest)
    delivered = Settlement(
        STATE,
        1,
        Verdict.DELIVERED,
        sent_at_ms=T0,
        step=first.step,
        step_done=first.done,
    )
    await store.settle("alive", [delivered], KNOWN_LIMITS, now_ms=T0 + 100)
    await fold(store, client, keys, SECOND, T0 + 500)
    _, second = await take(store, T0 + 1_000, "dies")  # sent, never answered
    assert isinstance(second, ApiRequest)
    await fold(store, client, keys, FIRST, T0 + 2_000)
    assert await client.hget(keys.incident(STATE), StateField.DONE_POST) == first.done.encode()
    claim, again = await take(store, T0 + 1_000 + LEASE_MS, "takes-over")
    assert StateField.DONE_POST not in claim.done
    assert isinstance(again, ApiRequest), f"skipped: {again}"
    assert (again.step, again.done) == (Step.POST, first.done)
