"""What a state owes after a DELETE it has not sent yet (found by the model test).

A POST or PATCH published after a DELETE is owed even when it equals what Datadog accepted
before that DELETE: the DELETE, sent first, removes it there. Before the fix, ``done:post``
and ``done:patch`` (what Datadog accepted before) made an equal POST or PATCH look delivered,
so only the DELETE went out and Datadog ended without the event published again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from forwarder.protocol import (
    KIND_DEPLOYMENT,
    KIND_FAILURE,
    KIND_FAILURE_DELETE,
    RedisKeys,
    StateField,
    state_id,
)
from harness.standin import StandinServer
from tests.delivery.test_operations import (
    API_KEY,
    APP_KEY,
    DEPLOYMENT_ID,
    INCIDENT,
    INCIDENT_ID,
    calls,
    publish,
    run,
)
from workers.delivery.operations import Step, owed_requests, state_digest

pytestmark = pytest.mark.anyio

PATCH = {"id": DEPLOYMENT_ID, "change_failure": True}


@pytest.fixture
def api() -> Iterator[StandinServer]:
    with StandinServer(API_KEY, app_key=APP_KEY) as server:
        yield server


def test_a_pending_delete_makes_every_later_request_owed() -> None:
    """done:* digests equal to the POST and PATCH after an unsent DELETE owe them anyway."""
    post = {"id": DEPLOYMENT_ID, "service": "checkout", "started_at": 1, "finished_at": 2}
    attributes = {**post, "delete": "000000000000005-0000000000", "patch.change_failure": True}
    done: dict[str, str] = {
        StateField.DONE_POST: state_digest(post),
        StateField.DONE_PATCH: state_digest({"change_failure": True}),
    }
    owed = owed_requests(state_id(KIND_DEPLOYMENT, DEPLOYMENT_ID), attributes, done)
    assert [(r.step, r.more) for r in owed] == [
        (Step.DELETE, True),
        (Step.POST, True),
        (Step.PATCH, False),
    ]


# The same for a deployment, POST and PATCH: tests/delivery/test_operations_review.py
# (test_the_same_patch_published_again_after_a_pending_delete_is_sent).


async def test_an_incident_deleted_and_published_again_unchanged_is_held_again(
    client: aioredis.Redis, keys: RedisKeys, api: StandinServer
) -> None:
    """The same for an incident: its DELETE, then the same POST again."""
    await publish(client, keys, KIND_FAILURE, INCIDENT)
    await run(client, keys, api)
    await publish(client, keys, KIND_FAILURE_DELETE, {"id": INCIDENT_ID})
    await publish(client, keys, KIND_FAILURE, INCIDENT)
    await run(client, keys, api)
    assert calls(api, INCIDENT_ID) == ["POST 202", "DELETE 202", "POST 202"]
    assert INCIDENT_ID in api.latest()
