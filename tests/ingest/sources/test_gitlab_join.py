"""GitLab's deployment hooks joined in real Redis: ``running`` is the start, ``success`` the
finish, and the deployment is enqueued once its success is known.

GitLab sends one hook per status and does not promise their order. The first time each
status is reported is kept (under ``RedisKeys(prefix).gitlab_prefix`` + the deployment's id,
for ``GITLAB_STATUS_KEEP_S``), so that a re-delivery changes nothing.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from forwarder import Event, to_event
from forwarder.protocol import KIND_DEPLOYMENT, RedisKeys
from tests.ingest.sources.support import (
    deliver,
    payload,
)
from workers.ingest.sources.endpoints import GITLAB_STATUS_KEEP_S

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_env", "no_secret_logged")]

S = 10**9
RUNNING_NS = 1_619_639_100 * S  # 2021-04-28 21:45:00 +0200
SUCCESS_NS = 1_619_639_400 * S  # 2021-04-28 21:50:00 +0200
DEPLOYMENT_ID = "gitlab-deployment:10.126.0.2:15"
SHA = "279484c09fbe69ededfced8c1bb6e6d24616b468"


@pytest.fixture
def join_key(prefix: str) -> str:
    return RedisKeys(prefix).gitlab_prefix + DEPLOYMENT_ID


def deployment(started_ns: int) -> Event:
    """GitLab's published deployment, from ``started_ns`` to its success."""
    return to_event(
        {
            "id": DEPLOYMENT_ID,
            "service": "test-deployment-webhooks",
            "started_at": started_ns,
            "finished_at": SUCCESS_NS,
            "env": "staging",
            "git": {
                "repository_url": "http://10.126.0.2:3000/root/test-deployment-webhooks",
                "commit_sha": SHA,
            },
        },
        KIND_DEPLOYMENT,
    )


def hook(status: str, changed_at: str | None = None) -> dict[str, Any]:
    """GitLab's deployment hook of ``status`` (its published times unless ``changed_at``)."""
    document: dict[str, Any] = payload(f"gitlab_deployment_{status}")
    if changed_at is not None:
        document["status_changed_at"] = changed_at
    return document


async def test_running_then_success_is_one_deployment_from_running(
    http: httpx.AsyncClient, stream: Any
) -> None:
    running = await deliver(http, "gitlab", hook("running"))
    assert running.status_code == 202, running.text
    assert stream() == []
    success = await deliver(http, "gitlab", hook("success"))
    assert success.status_code == 202, success.text
    assert success.json()["accepted"] == [{"id": DEPLOYMENT_ID, "kind": "deployment"}]
    assert stream() == [deployment(RUNNING_NS)]


async def test_success_then_running_sends_the_deployment_again_with_its_true_start(
    http: httpx.AsyncClient, stream: Any
) -> None:
    """A success alone starts when it finishes; the late running corrects the start."""
    assert (await deliver(http, "gitlab", hook("success"))).status_code == 202
    assert stream() == [deployment(SUCCESS_NS)]
    late = await deliver(http, "gitlab", hook("running"))
    assert late.status_code == 202, late.text
    assert late.json()["accepted"] == [{"id": DEPLOYMENT_ID, "kind": "deployment"}]
    assert stream() == [deployment(SUCCESS_NS), deployment(RUNNING_NS)]


async def test_running_alone_is_held_and_kept_for_a_while(
    http: httpx.AsyncClient, stream: Any, sync_redis: redis.Redis, join_key: str
) -> None:
    """202 (kept, as GitLab must not re-send it), nothing enqueued, the start kept with a TTL."""
    response = await deliver(http, "gitlab", hook("running"))
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == []
    assert answer["ignored"] == []
    (held,) = answer["held"]
    assert DEPLOYMENT_ID in held["what"]
    assert "success" in held["reason"]
    assert stream() == []
    assert sync_redis.hgetall(join_key) == {b"running": str(RUNNING_NS).encode()}
    assert 0 < int(sync_redis.ttl(join_key)) <= GITLAB_STATUS_KEEP_S


async def test_a_redelivered_running_keeps_the_first_time(
    http: httpx.AsyncClient, stream: Any, sync_redis: redis.Redis, join_key: str
) -> None:
    """A running re-sent later (or a re-run's) does not move the start."""
    assert (await deliver(http, "gitlab", hook("running"))).status_code == 202
    again = await deliver(http, "gitlab", hook("running", "2021-04-28 21:48:00 +0200"))
    assert again.status_code == 202, again.text
    assert sync_redis.hgetall(join_key) == {b"running": str(RUNNING_NS).encode()}
    assert (await deliver(http, "gitlab", hook("success"))).status_code == 202
    assert stream() == [deployment(RUNNING_NS)]
    assert 0 < int(sync_redis.ttl(join_key)) <= GITLAB_STATUS_KEEP_S


async def test_a_running_after_its_success_is_clamped_to_the_finish(
    http: httpx.AsyncClient, stream: Any
) -> None:
    """Clocks (or a re-run) put the running after the success: the start is the finish."""
    assert (await deliver(http, "gitlab", hook("running", "2021-04-28 22:00:00 +0200"))).is_success
    assert (await deliver(http, "gitlab", hook("success"))).status_code == 202
    assert stream() == [deployment(SUCCESS_NS)]


async def test_deployments_are_joined_by_their_own_id(http: httpx.AsyncClient, stream: Any) -> None:
    """Another deployment's running does not give this one its start."""
    other = hook("running", "2021-04-28 21:00:00 +0200") | {"deployment_id": 16}
    assert (await deliver(http, "gitlab", other)).status_code == 202
    assert (await deliver(http, "gitlab", hook("success"))).status_code == 202
    assert stream() == [deployment(SUCCESS_NS)]


async def test_a_running_that_can_never_be_a_deployment_is_refused_at_once(
    http: httpx.AsyncClient, stream: Any, sync_redis: redis.Redis, join_key: str
) -> None:
    """A project name past the limit is a 400 at the running, not 202 "held" and a 400 at
    the success: nothing is kept for it."""
    document = hook("running")
    document["project"]["name"] = "p" * 1001
    response = await deliver(http, "gitlab", document)
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert error["source"] == {"pointer": "/project/name"}
    assert sync_redis.exists(join_key) == 0
    assert stream() == []
