"""PATCH and DELETE through the engine: one order per id, supersede, 404, the application key.

Each test drives a real pump (real Redis, the real scripts, the real HTTP sender) against the
stand-in API over loopback, which checks Datadog's bodies and both keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import (
    KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_DELETE,
    KIND_DEPLOYMENT_PATCH,
    KIND_DEPLOYMENT_PATCH_BY_VERSION,
    KIND_FAILURE,
    KIND_FAILURE_DELETE,
    RedisKeys,
    StatsField,
    state_id,
)
from harness.standin import StandinServer
from workers.delivery.backoff import BackoffPolicy
from workers.delivery.fold import plan_fold
from workers.delivery.pump import Pump, PumpConfig, PumpReport
from workers.delivery.records import Settlement, Verdict
from workers.delivery.sender import DatadogSender
from workers.delivery.settlement import SettlementPolicy, before_sending
from workers.delivery.store import Store
from workers.ops.dead_letters import list_letters

pytestmark = pytest.mark.anyio

API_KEY = "operations-api-key-000001"
APP_KEY = "operations-app-key-000001"
DEPLOYMENT_ID = "deployment-ops-000000001"
REMEDY_ID = "deployment-ops-000000002"
INCIDENT_ID = "incident-ops-0000000001"
DEPLOYMENT = {
    "id": DEPLOYMENT_ID,
    "service": "checkout",
    "env": "prod",
    "version": "v1.12.7",
    "started_at": 1_700_000_000,
    "finished_at": 1_700_000_090,
}
INCIDENT = {"id": INCIDENT_ID, "services": ["checkout"], "started_at": 1_700_000_100}
ROLLBACK = {"id": REMEDY_ID, "type": "rollback"}


@pytest.fixture
def api() -> Iterator[StandinServer]:
    with StandinServer(API_KEY, app_key=APP_KEY) as server:
        yield server


def pump(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer, **policy: Any
) -> tuple[Pump, DatadogSender]:
    app_key = policy.pop("app_key", APP_KEY)
    sender = DatadogSender(
        base_url=api.url,
        api_key=SecretStr(API_KEY),
        app_key=SecretStr(app_key) if app_key else None,
        timeout_s=5.0,
        max_connections=8,
    )
    settlement = SettlementPolicy(
        backoff=BackoffPolicy(base_s=0.01, max_s=0.02),
        orphan_wait_ms=60_000,
        auth_pause_s=policy.pop("auth_pause_s", 0.05),
        has_app_key=bool(app_key),
        **policy,
    )
    config = PumpConfig(
        consumer="operations-test",
        ingest_batch=100,
        max_in_flight=8,
        lease_ms=30_000,
        reclaim_idle_ms=30_000,
        retention_ms=3_600_000,
        policy=settlement,
    )
    return Pump(Store(client, keys), sender, config), sender


async def publish(client: aioredis.Redis, keys: RedisKeys, kind: str, data: dict[str, Any]) -> None:
    await client.xadd(keys.ingest, encode_entry(to_event(data, kind)))


async def run(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer, budget_s: float = 0.5, **kw: Any
) -> PumpReport:
    engine, sender = pump(client, keys, api, **kw)
    try:
        return await engine.run(budget_s)
    finally:
        await sender.aclose()


def calls(api: StandinServer, event_id: str) -> list[str]:
    """The accepted requests for ``event_id``, in the order the API applied them."""
    return [f"{r.method} {r.status}" for r in api.requests_for(event_id)]


async def test_patch_in_the_batch_of_its_post_goes_after_it(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """POST and PATCH of one deployment, read in one batch: the POST lands first, then the
    PATCH (the stand-in answers 404 to a PATCH of a deployment it does not hold)."""
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    patch = {"id": DEPLOYMENT_ID, "change_failure": True, "remediation": ROLLBACK}
    await publish(client, keys, KIND_DEPLOYMENT_PATCH, patch)
    await run(client, keys, api)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202", "PATCH 202"]
    held = api.latest("dora_deployment")[DEPLOYMENT_ID]
    assert (held["change_failure"], held["remediation"]) == (True, ROLLBACK)


async def test_a_later_patch_supersedes_an_unsent_one_field_by_field(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """Two PATCHes folded before either is sent: one request, with the later values where
    they differ and the earlier remediation kept; a PATCH equal to the delivered one costs
    nothing."""
    api.preload("dora_deployment", DEPLOYMENT_ID, DEPLOYMENT)
    first = {"id": DEPLOYMENT_ID, "change_failure": True, "remediation": ROLLBACK}
    await publish(client, keys, KIND_DEPLOYMENT_PATCH, first)
    await publish(
        client, keys, KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": False}
    )
    await run(client, keys, api)
    patches = [r for r in api.requests_for(DEPLOYMENT_ID) if r.method == "PATCH"]
    assert [r.attributes for r in patches] == [{"change_failure": False, "remediation": ROLLBACK}]
    await publish(
        client, keys, KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": False}
    )
    report = await run(client, keys, api)
    assert report.sent == 0, "a PATCH equal to the delivered one is sent again"


async def test_delete_after_delivery_goes_out_and_nothing_after_it(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """POST, PATCH delivered; then DELETE: one DELETE, and the deployment is gone at the API."""
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await publish(
        client, keys, KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": True}
    )
    await run(client, keys, api)
    await publish(client, keys, KIND_DEPLOYMENT_DELETE, {"id": DEPLOYMENT_ID})
    await run(client, keys, api)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202", "PATCH 202", "DELETE 202"]
    assert DEPLOYMENT_ID not in api.latest("dora_deployment")
    assert api.resurrections() == []


async def test_delete_while_the_post_is_pending_sends_only_the_delete(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """A DELETE folded before its event's POST went out supersedes it: the POST (and PATCH)
    are never sent; the DELETE is (Datadog may hold the event from an earlier POST or from
    elsewhere), and the stand-in answers 404 for one it never held: settled, not retried."""
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await publish(
        client, keys, KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": True}
    )
    await publish(client, keys, KIND_DEPLOYMENT_DELETE, {"id": DEPLOYMENT_ID})
    await publish(client, keys, KIND_FAILURE, INCIDENT)
    await publish(client, keys, KIND_FAILURE_DELETE, {"id": INCIDENT_ID})
    report = await run(client, keys, api)
    assert calls(api, DEPLOYMENT_ID) == ["DELETE 404"]
    assert calls(api, INCIDENT_ID) == ["DELETE 404"]
    assert report.outcomes == {"delivered": 2}
    assert await client.zcard(keys.due) == 0


async def test_published_again_after_a_delete_goes_after_the_delete(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """DELETE then POST of the same id (published again): DELETE first, then the new POST;
    entries older than the DELETE that are folded late change nothing."""
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await run(client, keys, api)
    await publish(client, keys, KIND_DEPLOYMENT_DELETE, {"id": DEPLOYMENT_ID})
    again = {
        **DEPLOYMENT,
        "version": "v1.12.8",
        "started_at": 1_700_000_200,
        "finished_at": 1_700_000_290,
    }
    await publish(client, keys, KIND_DEPLOYMENT, again)
    await run(client, keys, api)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202", "DELETE 202", "POST 202"]
    assert api.latest("dora_deployment")[DEPLOYMENT_ID]["version"] == "v1.12.8"


async def test_patch_404_is_retried_then_delivered(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """A PATCH of a deployment Datadog does not know yet is retried; once it is known (its
    POST came from elsewhere), the PATCH lands."""
    await publish(
        client, keys, KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": True}
    )
    await run(client, keys, api, budget_s=0.3)
    assert calls(api, DEPLOYMENT_ID)[:1] == ["PATCH 404"]
    assert await client.zcard(keys.due) == 1, "the PATCH was dropped after a 404"
    api.preload("dora_deployment", DEPLOYMENT_ID, DEPLOYMENT)
    await run(client, keys, api)
    assert calls(api, DEPLOYMENT_ID)[-1] == "PATCH 202"
    assert api.latest("dora_deployment")[DEPLOYMENT_ID]["change_failure"] is True


async def test_patch_404_past_the_wait_is_a_dead_letter_with_the_reason(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer, sync_redis: Any
) -> None:
    """Past FORWARDER_PATCH_WAIT_S the 404 is a dead letter saying which deployment and why."""
    await publish(
        client, keys, KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": True}
    )
    await run(client, keys, api, budget_s=0.5, patch_wait_ms=50)
    (letter,) = list_letters(sync_redis, keys)
    assert letter.incident_id == state_id(KIND_DEPLOYMENT, DEPLOYMENT_ID)
    assert DEPLOYMENT_ID in letter.reason
    assert "FORWARDER_PATCH_WAIT_S" in letter.reason
    assert letter.detail is not None
    assert letter.detail["status"] == 404


async def test_without_an_application_key_patches_wait_and_posts_flow(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """No DD_APP_KEY: the POST is delivered, the PATCH waits (counted, never dead-lettered);
    a worker with the key then delivers it."""
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await publish(
        client, keys, KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": True}
    )
    await run(client, keys, api, app_key=None)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202"]
    assert await client.zrange(keys.app_key_waits, 0, -1) == [
        state_id(KIND_DEPLOYMENT, DEPLOYMENT_ID).encode()
    ]
    assert await client.xlen(keys.dead) == 0
    await run(client, keys, api, budget_s=0.5)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202", "PATCH 202"]
    assert await client.zcard(keys.app_key_waits) == 0


async def test_a_refused_application_key_pauses_patches_not_posts(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """A 403 to a PATCH pauses PATCH and DELETE fleet-wide (kept, not dead); POSTs go on."""
    await publish(
        client, keys, KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": True}
    )
    await run(client, keys, api, app_key="a-wrong-application-key", auth_pause_s=60.0)
    assert calls(api, DEPLOYMENT_ID) == ["PATCH 403"]
    assert await client.hget(keys.gate, "app_key_closed_until_ms")
    assert await client.hget(keys.gate, "closed_until_ms") is None, "POSTs were paused too"
    await publish(client, keys, KIND_FAILURE, INCIDENT)
    await run(client, keys, api, app_key="a-wrong-application-key", auth_pause_s=60.0)
    assert calls(api, INCIDENT_ID) == ["POST 202"]
    assert calls(api, DEPLOYMENT_ID) == ["PATCH 403"], "the paused PATCH went out again"
    assert await client.zcard(keys.app_key_waits) == 1
    assert await client.xlen(keys.dead) == 0


async def test_same_second_deployments_the_later_is_a_dead_letter_naming_both(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer, sync_redis: Any
) -> None:
    """Two deployments of one service and env in the same second: the first folded is sent,
    the later is a dead letter naming both ids, counted; another env or second is no clash."""
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    clash = {**DEPLOYMENT, "id": REMEDY_ID, "started_at": 1_700_000_000_400}  # ms, same second
    other_env = {**DEPLOYMENT, "id": "deployment-ops-000000003", "env": "staging"}
    await publish(client, keys, KIND_DEPLOYMENT, clash)
    await publish(client, keys, KIND_DEPLOYMENT, other_env)
    await run(client, keys, api)
    assert set(api.latest("dora_deployment")) == {DEPLOYMENT_ID, "deployment-ops-000000003"}
    (letter,) = list_letters(sync_redis, keys)
    assert DEPLOYMENT_ID in letter.reason
    assert REMEDY_ID in letter.reason
    assert "same second" in letter.reason
    assert await client.hget(keys.stats, StatsField.SAME_SECOND) == b"1"
    # Published again with its true start time, it is sent.
    await publish(client, keys, KIND_DEPLOYMENT, {**clash, "started_at": 1_700_000_001})
    await run(client, keys, api)
    assert REMEDY_ID in api.latest("dora_deployment")


async def test_patch_by_version_waits_for_the_post_of_its_deployment(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """Where enabled, a PATCH by version published with its deployment's POST goes after it:
    Datadog patches the most recent match, which must be this deployment, not an older one."""
    older = {
        **DEPLOYMENT,
        "id": REMEDY_ID,
        "started_at": 1_600_000_000,
        "finished_at": 1_600_000_090,
    }
    api.preload("dora_deployment", REMEDY_ID, older)  # the same version, deployed before
    await limits_known(client, keys)  # both may go in one claim
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    by_version = {
        "service": "checkout",
        "env": "prod",
        "version": "v1.12.7",
        "change_failure": True,
    }
    await publish(client, keys, KIND_DEPLOYMENT_PATCH_BY_VERSION, by_version)
    # Claimed together, the PATCH is told which deployment it waits for, and waits.
    store = Store(client, keys)
    await store.fold(
        plan_fold(await streams_of(client, keys)), retention_ms=60_000, orphan_wait_ms=0
    )
    claimed = await store.claim(10, 30_000, "token", probe_ms=1_000)
    patch = next(c for c in claimed.claims if c.kind == "deployment_version")
    assert patch.waits_for == DEPLOYMENT_ID
    policy = SettlementPolicy(patch_by_version=True)
    waiting = before_sending(patch, policy)
    assert isinstance(waiting, Settlement)
    assert waiting.verdict is Verdict.WAIT
    assert DEPLOYMENT_ID in waiting.reason
    await client.delete(keys.inflight)
    await client.zadd(keys.due, {c.incident_id: 0 for c in claimed.claims})
    await run(client, keys, api, budget_s=2.5, patch_by_version=True)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202", "PATCH 202"]
    assert "change_failure" not in api.latest("dora_deployment")[REMEDY_ID]


async def streams_of(
    client: aioredis.Redis, keys: RedisKeys
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of the ingest stream, as a worker reads them (and then deletes them)."""
    entries: Any = await client.xrange(keys.ingest)
    await client.delete(keys.ingest)
    return cast(list[tuple[bytes, dict[bytes, bytes]]], entries)


async def test_a_refused_application_key_is_probed_by_one_request_at_a_time(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """Many PATCHes wait behind a refused key: when each pause ends, one of them tries the
    key (fleet-wide), not all of them; the others wait for its answer."""
    waiting = [f"deployment-ops-probe-{n:04d}" for n in range(6)]
    for deployment_id in waiting:
        api.preload("dora_deployment", deployment_id, {**DEPLOYMENT, "id": deployment_id})
        await publish(
            client, keys, KIND_DEPLOYMENT_PATCH, {"id": deployment_id, "change_failure": True}
        )
    budget_s, pause_s = 2.0, 0.25
    await limits_known(client, keys)  # else the gate's own probe sends one at a time anyway
    await run(
        client, keys, api, budget_s=budget_s, app_key="wrong-application-key", auth_pause_s=pause_s
    )
    refused = [r for r in api.requests() if r.status == 403]
    assert refused, "the key was never tried"
    assert len(refused) <= budget_s / pause_s + 2, f"{len(refused)} refused requests: a burst"
    assert await client.zcard(keys.app_key_waits) == len(waiting)
    assert await client.xlen(keys.dead) == 0
    # With the right key, one probe succeeds and lifts the pause: all of them go.
    await run(client, keys, api, budget_s=3.0, auth_pause_s=pause_s)
    assert all(api.latest("dora_deployment")[d].get("change_failure") for d in waiting)


async def limits_known(client: aioredis.Redis, keys: RedisKeys) -> None:
    """Tell the gate that answers carry no rate limits, as after a 2xx: it then lets every
    claim through at once instead of one probe at a time."""
    seconds, micros = await client.time()
    await client.hset(keys.gate, "unlimited_ms", seconds * 1000 + micros // 1000)


async def test_a_post_again_after_a_patch_is_followed_by_the_patch_again(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """Whether Datadog keeps a PATCH across a later POST of the deployment is not documented
    (the stand-in's POST replaces the whole event): after a POST, the PATCH goes again."""
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await publish(
        client, keys, KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": True}
    )
    await run(client, keys, api)
    await publish(client, keys, KIND_DEPLOYMENT, {**DEPLOYMENT, "team": "payments"})
    await run(client, keys, api)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202", "PATCH 202", "POST 202", "PATCH 202"]
    held = api.latest("dora_deployment")[DEPLOYMENT_ID]
    assert (held["team"], held["change_failure"]) == ("payments", True)
