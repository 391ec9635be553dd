"""Chaos: a worker dies holding poison ahead of good entries. The next one reclaims past it.

A worker is caught waiting on the stream, stopped, handed the whole hostile corpus of raw
entries (``tests/data/hostile.py``: bytes that are not UTF-8, nesting 100,000 deep, numbers
of 5,000 digits, megabyte fields, and an entry whose fold script fails) followed by good
incidents, and SIGKILLed: everything is pending on a dead consumer, poison first. The next
worker reclaims in small pages, so the poison fills its first pages. Every good incident
must arrive as published, every poison entry must be a dead letter with its reason, and
nothing may be left pending.

The scenario runs a ``redis-server`` of its own: the caught worker is found in its client list.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from bench.chaos.retention import quiet
from bench.chaos.world import Row, Stack, incidents, row, stack
from forwarder import to_event
from forwarder.protocol import CONSUMER_GROUP, LetterField
from harness import streams
from harness.holding import die_holding
from harness.stack import RedisServer, wait_until
from tests.data.hostile import ENTRIES, WRONG_TYPE, WRONG_TYPE_ID, Hostile


def good_entries(events: list[dict[str, Any]]) -> list[dict[bytes, bytes]]:
    """The stream entries a ``Publisher`` would add for ``events``, as raw bytes."""
    return [
        {k.encode(): v.encode() for k, v in streams.entry_fields(to_event(event)).items()}
        for event in events
    ]


def letters_with_reason(client: redis.Redis, world: Stack, poison: dict[bytes, Hostile]) -> int:
    """Poison entries with exactly one dead letter, whose reason names the case's fault."""
    reasons: dict[bytes, list[str]] = {}
    for _, fields in streams.entries(client, world.keys.dead):
        entry_id = fields.get(LetterField.ENTRY_ID.encode(), b"")
        reason = fields.get(LetterField.REASON.encode(), b"").decode(errors="replace")
        reasons.setdefault(entry_id, []).append(reason)
    return sum(
        len(reasons.get(entry_id, [])) == 1 and case.says in reasons[entry_id][0]
        for entry_id, case in poison.items()
    )


def poison_dead_consumer(count: int = 500, page: int = 10) -> Row:
    """Poison and ``count`` good incidents pending on a killed worker; reclaim in ``page``s."""
    server = RedisServer().start()
    try:
        with stack(server.url) as world:
            client = world.redis()
            client.set(world.keys.incident(WRONG_TYPE_ID), "not a hash")
            cases = [*ENTRIES, WRONG_TYPE]
            events, expected = incidents(count, "poison")
            held = [case.data for case in cases] + good_entries(events)
            die_holding(
                world.workers, client, world.keys, held, FORWARDER_INGEST_BATCH=str(len(held))
            )
            ids = [entry_id for entry_id, _ in streams.entries(client, world.keys.ingest)]
            poison = dict(zip(ids, cases, strict=False))
            started = time.monotonic()
            world.workers.start(FORWARDER_RECLAIM_IDLE_S="1", FORWARDER_INGEST_BATCH=str(page))
            wait_until(lambda: quiet(world), timeout_s=180, what="every held entry settled")
            pending = client.xpending(world.keys.ingest, CONSUMER_GROUP)["pending"]
            dead = client.xlen(world.keys.dead)
            reasoned = letters_with_reason(client, world, poison)
            client.close()
            result = row(
                "poison_dead_consumer",
                world,
                expected,
                started,
                f"a worker SIGKILLed holding {len(cases)} poison entries ahead of {len(events)} "
                f"good ones ({count} incidents); reclaim in pages of {page}: {dead} dead "
                f"letters, {reasoned} with the case's reason; {pending} left pending",
            )
            result.facts.update(
                poison=len(cases),
                good_delivered=result.delivered,
                dead_letters=dead,
                letters_with_reason=reasoned,
                pending_left=pending,
                drain_s=result.drain_s,
            )
            result.published = count + len(cases)
            result.lost += len(cases) - reasoned
            return result
    finally:
        server.stop()
