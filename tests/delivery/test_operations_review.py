"""Adversarial review of PATCH and DELETE in the engine: reorderings, hostile states, the
application key's probe. Real Redis, the real scripts, a real pump against the stand-in."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import (
    KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_DELETE,
    KIND_DEPLOYMENT_PATCH,
    KIND_DEPLOYMENT_PATCH_BY_VERSION,
    RedisKeys,
    state_id,
)
from harness.standin import StandinServer
from tests.delivery.test_operations import (
    DEPLOYMENT,
    DEPLOYMENT_ID,
    api,
    calls,
    limits_known,
    publish,
    run,
)
from workers.delivery.fold import plan_fold
from workers.delivery.gate import GateUpdate
from workers.delivery.records import Settlement, Verdict
from workers.delivery.settlement import SettlementPolicy, before_sending
from workers.delivery.store import Store

pytestmark = pytest.mark.anyio

__all__ = ["api"]  # the stand-in fixture, shared with test_operations

DEPLOYMENT_KEY = state_id(KIND_DEPLOYMENT, DEPLOYMENT_ID)


def entry(kind: str, data: dict[str, Any]) -> dict[bytes, bytes]:
    """A stream entry's fields as a worker reads them."""
    return {str(k).encode(): str(v).encode() for k, v in encode_entry(to_event(data, kind)).items()}


async def test_the_same_post_published_again_after_a_pending_delete_is_sent(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """POST delivered; then DELETE and the very same POST published again, folded before the
    DELETE goes: the DELETE goes, then the POST (published after it) goes again. Datadog
    accepted that POST once, but the DELETE in between removes it."""
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await run(client, keys, api)
    await publish(client, keys, KIND_DEPLOYMENT_DELETE, {"id": DEPLOYMENT_ID})
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await run(client, keys, api)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202", "DELETE 202", "POST 202"]
    assert DEPLOYMENT_ID in api.latest("dora_deployment"), "published again, yet deleted"


async def test_the_same_patch_published_again_after_a_pending_delete_is_sent(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """The same for a PATCH: delivered, then DELETE, POST and the same PATCH again."""
    patch = {"id": DEPLOYMENT_ID, "change_failure": True}
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await publish(client, keys, KIND_DEPLOYMENT_PATCH, patch)
    await run(client, keys, api)
    await publish(client, keys, KIND_DEPLOYMENT_DELETE, {"id": DEPLOYMENT_ID})
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await publish(client, keys, KIND_DEPLOYMENT_PATCH, patch)
    await run(client, keys, api)
    assert calls(api, DEPLOYMENT_ID) == [
        "POST 202",
        "PATCH 202",
        "DELETE 202",
        "POST 202",
        "PATCH 202",
    ]
    assert api.latest("dora_deployment")[DEPLOYMENT_ID].get("change_failure") is True


async def test_an_older_delete_folded_after_the_post_it_precedes_does_not_win(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """DELETE published, then POST; the POST is folded and delivered first (the DELETE's
    entry sat with a consumer that died, and is reclaimed later). The newest publish is the
    POST: it must be what Datadog holds in the end, not the deletion."""
    store = Store(client, keys)
    await store.ensure_group()
    delete = (b"1000-0", entry(KIND_DEPLOYMENT_DELETE, {"id": DEPLOYMENT_ID}))
    post = (b"2000-0", entry(KIND_DEPLOYMENT, DEPLOYMENT))
    await store.fold(plan_fold([post]), retention_ms=3_600_000, orphan_wait_ms=60_000)
    await run(client, keys, api)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202"]
    await store.fold(plan_fold([delete]), retention_ms=3_600_000, orphan_wait_ms=60_000)
    await run(client, keys, api)
    assert DEPLOYMENT_ID in api.latest("dora_deployment"), (
        f"an older DELETE deleted the newer POST: {calls(api, DEPLOYMENT_ID)}"
    )
    assert calls(api, DEPLOYMENT_ID)[-1] == "POST 202"


async def test_a_patch_answered_404_after_a_refused_key_gives_the_probe_back(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """The application key was refused, and its pause is over: one PATCH probes it. Datadog
    answers 404 (the key works; the deployment is not known yet): the next PATCH need not
    wait for the probe to expire, so within a second every waiting PATCH is tried."""
    waiting = [f"deployment-review-404-{n:04d}" for n in range(4)]
    for deployment_id in waiting:
        await publish(
            client, keys, KIND_DEPLOYMENT_PATCH, {"id": deployment_id, "change_failure": True}
        )
    await limits_known(client, keys)
    seconds, micros = await client.time()
    now_ms = seconds * 1000 + micros // 1000
    await client.hset(keys.gate, "app_key_closed_until_ms", now_ms - 1)  # a pause, over
    await run(client, keys, api, budget_s=1.5, patch_wait_ms=3_600_000)
    tried = {r.event_id for r in api.requests() if r.method == "PATCH"}
    assert tried == set(waiting), f"only {len(tried)} of {len(waiting)} PATCHes were tried"


HAND_WRITTEN = {
    # A PATCH-by-version state holding a POST's attributes: no POST endpoint for that kind.
    "deployment_version/hand-written-0001": {
        "a:service": '"checkout"',
        "a:started_at": "1700000000000000000",
        "a:finished_at": "1700000090000000000",
    },
    # A state of a kind no version of the engine writes.
    "widget/hand-written-0002": {
        "a:service": '"checkout"',
        "a:started_at": "1700000000000000000",
    },
    # Same second as another deployment, with a start that is no number.
    "deployment/hand-written-0003": {
        "a:id": '"hand-written-0003"',
        "a:service": '"checkout"',
        "a:started_at": '"yesterday"',
        "same_second_as": "deployment-ops-000000002",
    },
}


@pytest.mark.parametrize("state_name", sorted(HAND_WRITTEN))
async def test_a_hand_written_state_is_a_dead_letter_not_a_crash(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer, state_name: str
) -> None:
    """I7: a state written by hand, of a kind or with values fold never writes, is dead-lettered
    with a reason; the pump goes on (here: delivers the deployment published with it)."""
    fields: dict[str, str | int] = {**HAND_WRITTEN[state_name], "version": 1, "first_ms": 1}
    await client.hset(keys.incident(state_name), mapping=fields)  # type: ignore[arg-type]
    await client.zadd(keys.due, {state_name: 0})
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await limits_known(client, keys)
    await run(client, keys, api)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202"]
    letters: Any = await client.xrange(keys.dead)
    assert [letter[b"incident_id"].decode() for _, letter in letters] == [state_name]
    assert await client.zcard(keys.inflight) == 0


async def test_a_second_key_of_another_type_loses_no_deployment(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """fold.lua reads the second a deployment takes after writing its fields: a key of
    another type there (written by hand) must not leave the state written but never due (the
    batch, folded again one by one, then finds nothing changed): the deployment is sent or
    dead-lettered."""
    second = keys.second_prefix + '"checkout" "prod" 1700000000'
    await client.hset(second, "by", "hand")
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await limits_known(client, keys)
    await run(client, keys, api)
    sent = calls(api, DEPLOYMENT_ID) == ["POST 202"]
    assert sent or await client.xlen(keys.dead) == 1, "the deployment was lost"


async def test_a_version_key_of_another_type_does_not_stop_delivery(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """A PATCH by version looks its deployment up under a version key: one of another type
    (written by hand) must not make the claim raise with its batch in flight (I7)."""
    by_version = {"service": "checkout", "env": "prod", "version": "v9", "change_failure": True}
    await client.hset(keys.version_prefix + '"checkout" "prod" "v9"', "by", "hand")
    await publish(client, keys, KIND_DEPLOYMENT_PATCH_BY_VERSION, by_version)
    await publish(client, keys, KIND_DEPLOYMENT, DEPLOYMENT)
    await limits_known(client, keys)
    await run(client, keys, api, patch_by_version=True)
    assert calls(api, DEPLOYMENT_ID) == ["POST 202"]
    assert await client.zcard(keys.inflight) == 0


async def test_a_waiting_state_that_vanished_leaves_no_count_of_waiters(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """A PATCH waits for the application key (counted in app_key_waits); its state is then
    deleted by hand (or evicted): claim.lua dead-letters it, and it no longer counts as
    waiting (status, metrics)."""
    await publish(
        client, keys, KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": True}
    )
    await run(client, keys, api, app_key=None)
    assert await client.zcard(keys.app_key_waits) == 1
    await client.delete(keys.incident(DEPLOYMENT_KEY))
    await client.zadd(keys.due, {DEPLOYMENT_KEY: 0})
    await run(client, keys, api, app_key=None)
    assert await client.xlen(keys.dead) == 1
    assert await client.zcard(keys.app_key_waits) == 0, "a dead letter still counted as waiting"


async def test_a_post_folded_while_its_patch_is_claimed_to_wait_goes_at_once(
    client: aioredis.Redis, keys: RedisKeys
) -> None:
    """POSTs go on while PATCH waits for the application key: a POST folded into the state
    while its PATCH's claim is in flight (settled as a 60 s wait) is due at once, not after
    the PATCH's wait."""
    store = Store(client, keys)
    await store.ensure_group()
    await limits_known(client, keys)
    patch = (b"1000-0", entry(KIND_DEPLOYMENT_PATCH, {"id": DEPLOYMENT_ID, "change_failure": True}))
    post = (b"2000-0", entry(KIND_DEPLOYMENT, DEPLOYMENT))
    await store.fold(plan_fold([patch]), retention_ms=3_600_000, orphan_wait_ms=60_000)
    (claim,) = (await store.claim(10, 30_000, "token", probe_ms=1_000)).claims
    await store.fold(plan_fold([post]), retention_ms=3_600_000, orphan_wait_ms=60_000)
    waiting = before_sending(claim, SettlementPolicy(has_app_key=False, auth_pause_s=60.0))
    assert isinstance(waiting, Settlement)
    assert waiting.verdict is Verdict.WAIT
    await store.settle("token", [waiting], GateUpdate())
    seconds, micros = await client.time()
    now_ms = seconds * 1000 + micros // 1000
    due_at = await client.zscore(keys.due, DEPLOYMENT_KEY)
    assert due_at is not None
    assert due_at <= now_ms, f"the POST waits {(due_at - now_ms) / 1000:.0f} s behind the PATCH"
