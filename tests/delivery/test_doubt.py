"""The newest version is the last to land (I2), even when a request's fate is in doubt.

A request without an answer may still be applied by the API until its lease ends; a late 2xx
(its lease lapsed) may have landed after a newer delivery. Either way the current version is
sent once more, claimed once the doubtful request can no longer land. The sender tells
doubtful failures from those that never left; the store (real Redis and fakeredis) keeps
the doubt and schedules the resend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from pydantic import SecretStr

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import RedisKeys, StateField
from harness.stack import free_port
from harness.standin import StandinServer
from workers.delivery.fold import plan_fold
from workers.delivery.gate import GateUpdate
from workers.delivery.operations import ApiRequest, Step, owed_requests
from workers.delivery.records import Attempt, Claim, Settlement, Verdict
from workers.delivery.sender import DatadogSender, may_have_landed
from workers.delivery.settlement import SettlementPolicy, before_sending, from_answer
from workers.delivery.store import Store

ON_FAKEREDIS_TOO = True
"""Each test using ``client`` runs on the real Redis and on fakeredis (see conftest)."""
ID = "incident-doubt-000001"
POST = ApiRequest(Step.POST, "POST", "/api/v2/dora/failure", None, "digest")
START = {"id": ID, "started_at": 1_700_000_000, "services": ["checkout"], "env": "prod"}
FINISH = {"id": ID, "finished_at": 1_700_000_600}
NO_GATE = GateUpdate()
LEASE_MS = 60_000
T0 = 1_800_000_000_000
"""A pinned Redis clock (ms): claims and settlements below say when they happen."""


# --- the sender: which failures may still land ---------------------------------------------


@pytest.mark.parametrize(
    ("error", "in_doubt"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("connect"), False),
        (httpx.PoolTimeout("pool"), False),
        (httpx.ReadTimeout("read"), True),
        (httpx.WriteError("reset"), True),
        (httpx.RemoteProtocolError("hung up"), True),
    ],
)
def test_only_failures_before_sending_are_certain(error: Exception, in_doubt: bool) -> None:
    """Connect and pool failures never left; timeouts and lost connections may land."""
    assert may_have_landed(error) is in_doubt


def test_aiohttp_cause_decides_over_an_httpx_mapping() -> None:
    """An httpx transport over aiohttp (httpx-aiohttp) maps a server that hung up to
    ConnectTimeout: the aiohttp cause says it is in doubt."""
    hung_up = httpx.ConnectTimeout("Server disconnected")
    hung_up.__cause__ = aiohttp.ServerDisconnectedError()
    assert may_have_landed(hung_up)
    refused = httpx.ConnectError("Cannot connect")
    # Its constructor wants a connection key whose fields change between aiohttp versions.
    refused.__cause__ = aiohttp.ClientConnectorError.__new__(aiohttp.ClientConnectorError)
    assert not may_have_landed(refused)


@pytest.fixture
def standin() -> Iterator[StandinServer]:
    with StandinServer("doubt-key") as server:
        yield server


async def send_once(url: str, timeout_s: float = 5.0) -> Attempt:
    sender = DatadogSender(
        base_url=url,
        api_key=SecretStr("doubt-key"),
        timeout_s=timeout_s,
        max_connections=4,
    )
    try:
        attributes = to_event(START).model_dump(mode="json", exclude_none=True)
        return await sender.send(owed_requests(ID, attributes, {})[0])
    finally:
        await sender.aclose()


def test_real_transport_classifies_real_failures(standin: StandinServer) -> None:
    """Over aiohttp: a dropped connection and a timeout are in doubt, a refused connect not."""
    standin.drop_next()
    dropped = asyncio.run(send_once(standin.url))
    assert (dropped.status, dropped.in_doubt) == (None, True)
    standin.apply_late(1, hold_s=1.0)
    timed_out = asyncio.run(send_once(standin.url, timeout_s=0.2))
    assert (timed_out.status, timed_out.in_doubt) == (None, True)
    refused = asyncio.run(send_once(f"http://127.0.0.1:{free_port()}"))
    assert (refused.status, refused.in_doubt) == (None, False)
    assert asyncio.run(send_once(standin.url)).status == 202


# --- pure policy ---------------------------------------------------------------------------


def claim(**changes: Any) -> Claim:
    fields: dict[str, Any] = {
        "incident_id": ID,
        "version": 2,
        "sent_version": 2,
        "attempt": 0,
        "first_seen_ms": T0 - 1_000,
        "failing_since_ms": None,
        "attributes": to_event(START).model_dump(mode="json", exclude_none=True),
        "claimed_at_ms": T0,
    }
    return Claim(**{**fields, **changes})


def test_delivered_version_is_sent_again_once_the_doubt_is_over() -> None:
    """A delivered version goes out again if claimed at or after doubt_until_ms, not before."""
    policy = SettlementPolicy()
    assert isinstance(before_sending(claim(), policy), Settlement)  # no doubt: nothing to send
    early = before_sending(claim(doubt_until_ms=T0 + 1), policy)
    assert isinstance(early, Settlement)
    assert (early.verdict, early.sent_at_ms) == (Verdict.DELIVERED, 0)
    assert isinstance(before_sending(claim(doubt_until_ms=T0), policy), ApiRequest)


def test_settlements_say_when_sent_and_whether_in_doubt() -> None:
    """Answers carry the claim's time; only an attempt in doubt is marked so."""
    timeout = Attempt(None, {}, "", "ReadTimeout: x", in_doubt=True)
    retry = from_answer(claim(version=3), POST, timeout, SettlementPolicy())
    assert (retry.verdict, retry.sent_at_ms, retry.doubt) == (Verdict.RETRY, T0, True)
    ok = from_answer(claim(version=3), POST, Attempt(202, {}, ""), SettlementPolicy())
    assert (ok.verdict, ok.sent_at_ms, ok.doubt) == (Verdict.DELIVERED, T0, False)


# --- the store: the doubt is kept, and the resend scheduled ----------------------------------


async def fold(store: Store, client: Any, keys: RedisKeys, *events: dict[str, Any]) -> None:
    for event in events:
        await client.xadd(keys.ingest, encode_entry(to_event(event)))
    entries = await store.read("c1", 100, None)
    await store.fold(plan_fold(entries), retention_ms=3_600_000, orphan_wait_ms=60_000)


async def take(store: Store, at_ms: int, holder: str = "t") -> list[Claim]:
    result = await store.claim(10, LEASE_MS, holder, probe_ms=5_000, now_ms=at_ms)
    return result.claims


async def settle(store: Store, token: str, at_ms: int, *settlements: Settlement) -> Any:
    return await store.settle(token, settlements, NO_GATE, now_ms=at_ms)


def delivered(claimed: Claim) -> Settlement:
    return Settlement(ID, claimed.version, Verdict.DELIVERED, sent_at_ms=claimed.claimed_at_ms)


@pytest.mark.anyio
async def test_timeout_then_newer_delivery_is_followed_by_a_resend_at_lease_end(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """Start times out, finish delivered before its lease ends: the finish goes again after."""
    await fold(store, client, keys, START)
    (start,) = await take(store, T0)
    await fold(store, client, keys, FINISH)
    timeout = Settlement(
        ID, start.version, Verdict.RETRY, 100, "timeout", "", sent_at_ms=T0, doubt=True
    )
    await settle(store, "t", T0 + 1_000, timeout)
    lease_end = T0 + LEASE_MS
    assert (
        await client.hget(keys.incident(ID), StateField.DOUBT_UNTIL_MS) == str(lease_end).encode()
    )
    (finish,) = await take(store, T0 + 2_000)
    assert finish.version == start.version + 1
    assert isinstance(before_sending(finish, SettlementPolicy()), ApiRequest)
    await settle(store, "t", T0 + 2_100, delivered(finish))
    # Not done: due again when the timed-out start can no longer land.
    assert await client.zscore(keys.due, ID) == lease_end
    assert await take(store, lease_end - 1) == []
    (again,) = await take(store, lease_end)
    assert (again.version, again.sent_version) == (finish.version, finish.version)
    assert isinstance(before_sending(again, SettlementPolicy()), ApiRequest)  # sent, not skipped
    await settle(store, "t", lease_end + 50, delivered(again))
    assert await client.hget(keys.incident(ID), StateField.DOUBT_UNTIL_MS) is None
    assert await client.zscore(keys.due, ID) is None


@pytest.mark.anyio
async def test_late_2xx_after_a_lapsed_lease_makes_the_incident_due_again(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A 2xx arriving after the lease lapsed may have landed last: the current state goes again."""
    await fold(store, client, keys, START)
    (start,) = await take(store, T0, "slow")
    await fold(store, client, keys, FINISH)
    # The slow worker's lease lapses; another worker delivers the finish.
    (finish,) = await take(store, T0 + LEASE_MS, "fast")
    await settle(store, "fast", T0 + LEASE_MS + 100, delivered(finish))
    assert await client.zscore(keys.due, ID) is None
    late_at = T0 + LEASE_MS + 5_000
    result = await settle(store, "slow", late_at, delivered(start))
    assert result.stale == 1
    assert await client.zscore(keys.due, ID) == late_at
    (again,) = await take(store, late_at)
    assert isinstance(before_sending(again, SettlementPolicy()), ApiRequest)
    await settle(store, "t", late_at + 50, delivered(again))
    assert await client.zscore(keys.due, ID) is None


@pytest.mark.anyio
async def test_late_2xx_while_another_holds_the_claim_defers_to_its_settlement(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A late landing during another worker's request: that delivery is followed by a resend."""
    await fold(store, client, keys, START)
    (start,) = await take(store, T0, "slow")
    await fold(store, client, keys, FINISH)
    (finish,) = await take(store, T0 + LEASE_MS, "fast")
    late_at = T0 + LEASE_MS + 50
    await settle(store, "slow", late_at, delivered(start))
    assert await client.zscore(keys.due, ID) is None  # in flight: not twice
    await settle(store, "fast", late_at + 50, delivered(finish))
    assert await client.zscore(keys.due, ID) == late_at
    (again,) = await take(store, late_at + 100)
    assert isinstance(before_sending(again, SettlementPolicy()), ApiRequest)


@pytest.mark.anyio
async def test_certain_failure_leaves_no_doubt(store: Store, client: Any, keys: RedisKeys) -> None:
    """A connect error or a 503 never landed: the delivery after it is final."""
    await fold(store, client, keys, START)
    (first,) = await take(store, T0)
    refused = Settlement(ID, first.version, Verdict.RETRY, 100, "refused", "", sent_at_ms=T0)
    await settle(store, "t", T0 + 10, refused)
    (second,) = await take(store, T0 + 200)
    await settle(store, "t", T0 + 300, delivered(second))
    assert await client.zscore(keys.due, ID) is None
    assert await client.hget(keys.incident(ID), StateField.DOUBT_UNTIL_MS) is None


@pytest.mark.anyio
async def test_claims_released_at_shutdown_are_in_doubt(
    store: Store, client: Any, keys: RedisKeys
) -> None:
    """A claim given back mid-request may still land: its redelivery is followed by a resend."""
    await fold(store, client, keys, START)
    (first,) = await take(store, T0)
    released = Settlement(ID, first.version, Verdict.WAIT, 0, "released", doubt=True)
    await settle(store, "t", T0 + 10, released)
    (second,) = await take(store, T0 + 20, "other")
    await settle(store, "other", T0 + 30, delivered(second))
    assert await client.zscore(keys.due, ID) == T0 + LEASE_MS


@pytest.mark.parametrize(
    ("error", "in_doubt"),
    [
        (aiohttp.ServerDisconnectedError(), True),  # hung up after the request was written
        (aiohttp.SocketTimeoutError("read"), True),  # no answer in time
        (aiohttp.ConnectionTimeoutError("connect"), False),  # never connected
        (aiohttp.ClientPayloadError("bad chunk"), True),  # an answer came: the request went
    ],
)
def test_aiohttp_errors_the_sender_meets_are_judged_as_such(
    error: Exception, in_doubt: bool
) -> None:
    """What aiohttp itself raises (the workers' client): only a failed connect is certain."""
    assert may_have_landed(error) is in_doubt
