"""A chaos scenario's world: Redis prefix, stand-in API, workers, publisher; and its figures."""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis

from forwarder import (
    DeploymentDeletion,
    DeploymentPatch,
    Event,
    IncidentDeletion,
    Publisher,
    to_event,
)
from forwarder.protocol import KIND_DEPLOYMENT, RedisKeys
from harness.stack import Received, Workers, delete_keys, judge, wait_until
from harness.standin import StandinServer

NS = 1_000_000_000
EventLike = Event | Mapping[str, Any]


@dataclass
class Row:
    """One scenario's figures."""

    scenario: str
    published: int
    delivered: int
    lost: int
    duplicate_requests: int
    rate_limited_429s: int
    drain_s: float
    note: str = ""
    facts: dict[str, float] = field(default_factory=dict)
    """The scenario's own measurements, for tests to assert on."""


@dataclass
class Stack:
    """One scenario's world: a key prefix, the stand-in, workers, a publisher."""

    redis_url: str
    prefix: str
    standin: StandinServer
    workers: Workers
    publisher: Publisher

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.prefix)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)


@contextmanager
def stack(redis_url: str, api_key: str | None = None) -> Iterator[Stack]:
    """Set up a scenario's world, and tear all of it down (processes, keys) afterwards.

    Workers get the stand-in's API key and application key (PATCH and DELETE need both).
    """
    prefix = f"chaos-{uuid.uuid4().hex[:10]}"
    key = api_key or f"chaos-key-{uuid.uuid4().hex}"
    app_key = f"chaos-app-key-{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory() as tmp, StandinServer(key, app_key=app_key) as standin:
        workers = Workers(redis_url, prefix, standin.url, key, Path(tmp), app_key=app_key)
        publisher = Publisher.from_url(redis_url, key_prefix=prefix)
        world = Stack(redis_url, prefix, standin, workers, publisher)
        try:
            yield world
        finally:
            workers.stop_all()
            logs = workers.logs()
            leaked = [name for name, k in (("API", key), ("application", app_key)) if k in logs]
            publisher.close()
            _delete_prefix(redis_url, prefix)
            if leaked:
                raise AssertionError(f"the {' and '.join(leaked)} key appeared in a worker's log")


def _delete_prefix(redis_url: str, prefix: str) -> None:
    # A scenario that failed mid-crash may leave its Redis down: nothing to clean then.
    with contextlib.suppress(redis.RedisError):
        delete_keys(redis_url, "{" + prefix + "}*")


def incidents(count: int, tag: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Start and finish events for ``count`` incidents, and each one's expected final state."""
    events: list[dict[str, Any]] = []
    expected: dict[str, dict[str, Any]] = {}
    for i in range(count):
        incident = f"{tag}-{i:012d}"
        start = {
            "id": incident,
            "started_at": 1_700_000_000 + i,
            "services": ["api"],
            "env": "prod",
        }
        events.append(start)
        events.append({"id": incident, "finished_at": 1_700_000_600 + i})
        expected[incident] = {
            **start,
            "started_at": (1_700_000_000 + i) * NS,
            "finished_at": (1_700_000_600 + i) * NS,
        }
    return events, expected


@dataclass
class Workload:
    """Incidents and deployments, PATCHes and DELETEs among them, and what the API must end
    with. ``events`` go first, in order; ``later`` (DELETEs) once their POSTs likely arrived."""

    events: list[EventLike]
    later: list[EventLike]
    incidents: dict[str, dict[str, Any]]
    """Incidents not deleted: their final state at the API."""
    deployments: dict[str, dict[str, Any]]
    """Deployments not deleted: their final state, POST attributes and any PATCHed ones."""
    deleted: dict[str, set[str]]
    """The stand-in's kind (dora_failure, dora_deployment) -> ids deleted last."""
    patched: int
    later_after_post: int = 0
    """DELETEs in ``later`` published once their event was at the API (``await_later``)."""

    @property
    def published(self) -> int:
        """Incidents and deployments published (deleted ones included)."""
        return len(self.incidents) + len(self.deployments) + sum(map(len, self.deleted.values()))

    def posts(self) -> dict[str, dict[str, Any]]:
        """Deployments not deleted: their POST attributes alone."""
        return {
            i: {k: v for k, v in state.items() if k not in PATCHED}
            for i, state in self.deployments.items()
        }

    def later_targets(self) -> dict[str, list[str]]:
        """The stand-in's kind -> ids whose DELETE is in ``later``."""
        targets: dict[str, list[str]] = {FAILURES: [], DEPLOYMENTS: []}
        for event in self.later:
            kind = DEPLOYMENTS if isinstance(event, DeploymentDeletion) else FAILURES
            targets[kind].append(event_id(event))
        return targets

    def describe(self) -> str:
        """The mix, for a row's note."""
        return (
            f"{len(self.incidents) + len(self.deleted[FAILURES])} incidents and "
            f"{len(self.deployments) + len(self.deleted[DEPLOYMENTS])} deployments "
            f"({self.patched} PATCHed), {len(self.deleted[FAILURES])} incidents and "
            f"{len(self.deleted[DEPLOYMENTS])} deployments DELETEd"
        )


FAILURES: Final = "dora_failure"
DEPLOYMENTS: Final = "dora_deployment"
DEPLOYED_AT: Final = 1_700_100_000
PATCHED: Final = frozenset({"change_failure", "remediation"})


def event_id(event: EventLike) -> str:
    return to_event(event).event_id if isinstance(event, Mapping) else event.event_id


def mixed(count: int, tag: str, deployments: int | None = None) -> Workload:
    """``count`` incidents (as ``incidents`` makes them) and ``deployments`` (default: a
    tenth as many) deployments of five services, spread among them; a third of the
    deployments PATCHed right after their POST (a change failure, remedied by a rollback or
    a rollforward). DELETEs: every twentieth incident and every tenth deployment, half of
    them right after their events (superseding the POST if the worker has not sent it yet),
    half in ``later``."""
    deployments = count // 10 if deployments is None else deployments
    starts, expected = incidents(count, tag)
    work = Workload([], [], expected, {}, {FAILURES: set(), DEPLOYMENTS: set()}, 0)
    step = max(1, count // deployments) if deployments else 0
    made = 0
    for i, incident in enumerate(list(expected)):
        work.events += starts[2 * i : 2 * i + 2]
        if i % 20 == 10:
            _delete(work, FAILURES, IncidentDeletion(id=incident), late=i // 20 % 2 == 1)
        if step and i % step == step - 1 and made < deployments:
            _deployment(work, tag, made)
            made += 1
    for n in range(made, deployments):
        _deployment(work, tag, n)
    return work


def _deployment(work: Workload, tag: str, n: int) -> None:
    deployment = f"{tag}-deploy-{n:08d}"
    started = DEPLOYED_AT + n  # Datadog keeps one deployment per service+env per second
    post = {
        "id": deployment,
        "service": f"svc-{n % 5}",
        "env": "prod",
        "version": f"v{n}",
        "started_at": started,
        "finished_at": started + 60,
    }
    work.events.append(to_event(post, KIND_DEPLOYMENT))
    state: dict[str, Any] = {**post, "started_at": started * NS, "finished_at": (started + 60) * NS}
    if n % 3 == 0:
        remedy = (
            {"id": f"{tag}-deploy-{n + 1:08d}", "type": "rollback"}
            if n % 2 == 0
            else {"version": f"v{n + 1}", "type": "rollforward"}
        )
        patch = {"change_failure": True, "remediation": remedy}
        work.events.append(DeploymentPatch.model_validate({"id": deployment, **patch}))
        state.update(patch)
        work.patched += 1
    work.deployments[deployment] = state
    if n % 10 == 5:
        _delete(work, DEPLOYMENTS, DeploymentDeletion(id=deployment), late=n // 10 % 2 == 1)


def _delete(
    work: Workload, kind: str, deletion: DeploymentDeletion | IncidentDeletion, *, late: bool
) -> None:
    """Delete an event: in ``work.later`` if ``late``, else right after its events."""
    (work.later if late else work.events).append(deletion)
    (work.incidents if kind == FAILURES else work.deployments).pop(deletion.id)
    work.deleted[kind].add(deletion.id)


def publish_all(publisher: Publisher, events: Sequence[EventLike]) -> None:
    for start in range(0, len(events), 500):
        publisher.publish_many(events[start : start + 500])


def await_later(world: Stack, work: Workload, timeout_s: float = 30.0) -> None:
    """Wait until the events ``work.later`` deletes are at the API (at most ``timeout_s``),
    and count those that are in ``work.later_after_post``."""
    targets = work.later_targets()

    def arrived() -> int:
        held = {kind: world.standin.latest(kind) for kind in targets}
        return sum(i in held[kind] for kind, ids in targets.items() for i in ids)

    with contextlib.suppress(AssertionError):
        wait_until(lambda: arrived() == len(work.later), timeout_s=timeout_s, what="targets")
    work.later_after_post = arrived()


def publish_later(world: Stack, work: Workload, timeout_s: float = 30.0) -> None:
    """Publish ``work.later`` once the events they delete are at the API (``await_later``)."""
    await_later(world, work, timeout_s)
    publish_all(world.publisher, work.later)


def posts_held(world: Stack, work: Workload) -> Callable[[], bool]:
    """Whether the API holds the POST of every event not deleted (PATCHes aside)."""

    def check() -> bool:
        held = {kind: world.standin.latest(kind) for kind in (FAILURES, DEPLOYMENTS)}
        if any(held[FAILURES].get(i) != state for i, state in work.incidents.items()):
            return False
        deployed = held[DEPLOYMENTS]
        return all(
            {k: v for k, v in deployed.get(i, {}).items() if k not in PATCHED} == post
            for i, post in work.posts().items()
        )

    return check


def drained(world: Stack, expected: dict[str, dict[str, Any]] | Workload) -> Callable[[], bool]:
    """Whether the API holds every final state; for a ``Workload``, also every deleted id
    gone and its DELETE answered (202, or 404 when its POST never went)."""
    if not isinstance(expected, Workload):
        expected = Workload([], [], expected, {}, {FAILURES: set(), DEPLOYMENTS: set()}, 0)
    work = expected

    def check() -> bool:
        held = {kind: world.standin.latest(kind) for kind in (FAILURES, DEPLOYMENTS)}
        finals = ((FAILURES, work.incidents), (DEPLOYMENTS, work.deployments))
        if any(held[kind].get(i) != s for kind, states in finals for i, s in states.items()):
            return False
        if not any(work.deleted.values()):
            return True
        answered = {
            (r.kind, r.event_id)
            for r in world.standin.requests()
            if r.method == "DELETE" and r.status in (202, 404)
        }
        return all(
            i not in held[kind] and (kind, i) in answered
            for kind, ids in work.deleted.items()
            for i in ids
        )

    return check


def judge_work(world: Stack, work: Workload) -> Received:
    """``harness.stack.judge`` of what the API holds against ``work``."""
    return judge(world.standin, work.incidents, deployments=work.deployments, deleted=work.deleted)


def row(
    name: str,
    world: Stack,
    expected: dict[str, dict[str, Any]] | Workload,
    started: float,
    note: str = "",
    **facts: float,
) -> Row:
    """The scenario's row. For a ``Workload``, lost also counts deleted ids the API holds,
    and the note and facts tell the mix and the order of its requests."""
    if not isinstance(expected, Workload):
        received = judge(world.standin, expected)
        published = len(expected)
    else:
        received = judge_work(world, expected)
        published = expected.published
        note += (
            f"; {expected.describe()} ({received.superseded} before their POST went, "
            f"{expected.later_after_post} after it arrived): "
            f"{len(received.patch_before_post)} PATCH before its POST, "
            f"{len(received.resurrections)} resurrections"
        )
        facts.update(
            deployments=len(expected.deployments) + len(expected.deleted[DEPLOYMENTS]),
            patched=expected.patched,
            deleted=sum(map(len, expected.deleted.values())),
            superseded=received.superseded,
            later_after_post=expected.later_after_post,
            patch_before_post=len(received.patch_before_post),
            resurrections=len(received.resurrections),
        )
    return Row(
        name,
        published,
        received.delivered,
        len(received.lost),
        received.duplicates,
        received.rate_limited,
        round(time.monotonic() - started, 1),
        note,
        facts,
    )
