"""Chaos: the key is refused for longer than the retention, then fixed. Nothing vanishes.

Every incident published must end delivered or dead-lettered with a reason. Beside complete
incidents the scenario publishes finishes whose start never comes (they wait longer than the
retention, then die as orphans) and deletes a few states while they are due, as an operator
or an older version's expiry would (the claim dead-letters them: "state is missing").
"""

from __future__ import annotations

import time
import uuid

from bench.chaos.world import Row, Stack, incidents, publish_all, row, stack
from harness.stack import wait_until
from workers.ops.dead_letters import list_letters


def quiet(world: Stack) -> bool:
    """Nothing left to read, due or in flight: every incident has reached its end."""
    client = world.redis()
    keys = world.keys
    try:
        pending = client.xpending(keys.ingest, "forwarder")["pending"]
        left = client.xlen(keys.ingest) + client.zcard(keys.due) + client.zcard(keys.inflight)
        return pending == 0 and left == 0
    finally:
        client.close()


def dead_letters(world: Stack) -> dict[str, str]:
    """Incident id -> the reason of its dead letter."""
    client = world.redis()
    try:
        return {
            letter.incident_id: letter.reason
            for letter in list_letters(client, world.keys)
            if letter.incident_id is not None
        }
    finally:
        client.close()


def redis_ms(world: Stack) -> int:
    client = world.redis()
    try:
        seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000
    finally:
        client.close()


def retention(
    redis_url: str,
    count: int = 1000,
    *,
    orphans: int = 50,
    deleted: int = 20,
    retention_s: float = 2.0,
    refused_for_s: float = 6.0,
) -> Row:
    """Publish, refuse the key for ``refused_for_s`` (> retention), fix it; account for all."""
    assert deleted < count, "states to delete are taken among the incidents"
    good_key = f"chaos-key-{uuid.uuid4().hex}"
    short = {
        "FORWARDER_RETENTION_S": f"{retention_s:g}",
        "FORWARDER_AUTH_PAUSE_S": "1",
        # Every other horizon within the retention, so the scenario also holds under a rule
        # that the retention must cover them; orphans wait past the retention nonetheless.
        "FORWARDER_MAX_AGE_S": f"{retention_s / 2:g}",
        "FORWARDER_ORPHAN_WAIT_S": f"{retention_s / 2:g}",
    }
    with stack(redis_url, api_key=good_key) as world:
        events, expected = incidents(count, "retain")
        orphan_ids = [f"retain-orphan-{i:012d}" for i in range(orphans)]
        events += [{"id": i, "finished_at": 1_700_000_600} for i in orphan_ids]
        wrong = world.workers.start(key=f"wrong-key-{uuid.uuid4().hex}", **short)
        started = time.monotonic()
        publish_all(world.publisher, events)
        client = world.redis()
        wait_until(
            lambda: (
                client.zcard(world.keys.due) + client.zcard(world.keys.inflight) == count + orphans
            ),
            timeout_s=60,
            what="every incident folded",
        )
        # States deleted while due (not while in flight: a settlement would then wait out
        # the lease before the claim finds the state missing).
        gone = [i for i in expected if client.zscore(world.keys.due, i) is not None][:deleted]
        client.delete(*(world.keys.incident(i) for i in gone))
        until = redis_ms(world) + int(refused_for_s * 1000)
        wait_until(lambda: redis_ms(world) >= until, timeout_s=refused_for_s + 30, what="time")
        refused = world.standin.status_counts().get(403, 0)
        wrong.stop()
        world.workers.start(**short)
        wait_until(lambda: quiet(world), timeout_s=120, what="every incident settled")
        client.close()
        letters = dead_letters(world)
        latest = world.standin.latest()
        kept = {i: state for i, state in expected.items() if i not in gone}
        # Vanished: neither at the API as published nor dead-lettered with a reason.
        vanished = [i for i, state in kept.items() if latest.get(i) != state and i not in letters]
        vanished += [i for i in [*gone, *orphan_ids] if i not in letters]
        missing = sum("state is missing" in letters.get(i, "") for i in gone)
        orphaned = sum("never arrived" in letters.get(i, "") for i in orphan_ids)
        result = row(
            "retention",
            world,
            kept,
            started,
            f"key refused {refused_for_s:g} s > retention {retention_s:g} s "
            f"({refused} requests refused); {orphaned} orphan finishes and {missing} deleted "
            f"states dead-lettered with reasons; {len(vanished)} vanished",
            vanished=len(vanished),
            orphans_dead=orphaned,
            missing_dead=missing,
            refused=refused,
            dead_letters=len(letters),
        )
        result.published = count + orphans
        result.lost = len(vanished)
        return result
