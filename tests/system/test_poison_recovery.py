"""Poison entries against real worker processes: dead letters, and nothing held up behind them.

Raw ``XADD``s of the shared hostile corpus (``tests/data/hostile.py``) and an entry whose
fold script fails, next to good entries: every bad one ends as a dead letter with its reason
and its bytes, every good one is delivered. Then the same after a worker died holding
them: the next worker's reclaim is not held up by any of them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from forwarder.protocol import CONSUMER_GROUP, PAYLOAD_BASE64, RedisKeys
from harness import streams
from harness.holding import die_holding
from harness.stack import RedisServer, Worker, Workers, wait_until
from harness.standin import StandinServer
from tests.data.hostile import (
    ENTRIES,
    GOOD_ATTRIBUTES,
    TOLERATED,
    WRONG_TYPE,
    WRONG_TYPE_ID,
    Hostile,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def good_entry(number: int) -> dict[bytes, bytes]:
    event = {**GOOD_ATTRIBUTES, "id": f"hostile-good-{number:06d}"}
    return {b"v": b"1", b"kind": b"failure", b"event": json.dumps(event).encode()}


def raw_payload(letter: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """A stream dead letter's payload, back to the entry's raw names and values."""
    payload = json.loads(letter[b"payload"])
    if letter[b"payload_encoding"] == PAYLOAD_BASE64.encode():
        return {base64.b64decode(k): base64.b64decode(v) for k, v in payload.items()}
    return {k.encode(): v.encode() for k, v in payload.items()}


def check_letters(client: redis.Redis, keys: RedisKeys, bad: dict[str, Hostile]) -> None:
    """One letter per bad entry, with the case's reason and its bytes (or a bounded cut)."""
    rows = [f for _, f in streams.entries(client, keys.dead)]
    letters = {f[b"entry_id"].decode(): f for f in rows}
    assert sorted(f[b"entry_id"].decode() for f in rows) == sorted(bad)  # one each, no more
    for entry_id, case in bad.items():
        letter = letters[entry_id]
        reason = letter[b"reason"].decode()
        assert case.says in reason, (case.name, reason[:300])
        assert reason.isprintable()
        if letter[b"payload_truncated"] == b"1":
            assert len(letter[b"payload"]) < 100_000
            assert int(letter[b"payload_bytes"]) > 65_536
        else:
            assert raw_payload(letter) == case.data, case.name


def test_raw_corpus_becomes_dead_letters_and_good_entries_arrive(
    start_worker: Callable[..., Worker],
    workers: Workers,
    standin: StandinServer,
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """Every hostile raw entry is a dead letter with its reason; every good one is delivered."""
    sync_redis.set(keys.incident(WRONG_TYPE_ID), "not a hash")
    cases = [*ENTRIES, WRONG_TYPE]
    bad: dict[str, Hostile] = {}
    for number, case in enumerate(cases):
        streams.add(sync_redis, keys.ingest, good_entry(number))
        bad[streams.add(sync_redis, keys.ingest, case.data).decode()] = case
    streams.add(sync_redis, keys.ingest, TOLERATED)
    wanted = {f"hostile-good-{n:06d}" for n in range(len(cases))} | {"hostile-tolerated-0001"}
    start_worker()
    wait_until(
        lambda: wanted <= set(standin.latest()), timeout_s=60, what="every good entry delivered"
    )
    wait_until(
        lambda: sync_redis.xlen(keys.dead) >= len(bad), timeout_s=30, what="a letter per bad entry"
    )
    check_letters(sync_redis, keys, bad)
    assert sync_redis.xpending(keys.ingest, CONSUMER_GROUP)["pending"] == 0
    assert "Traceback" not in workers.logs()


# --- a worker dies holding poison -------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own: its client list shows only this test's workers."""
    server = RedisServer().start()
    yield server
    server.stop()


def test_reclaim_after_a_worker_died_holding_poison_is_not_held_up(
    own_redis: RedisServer, standin: StandinServer, api_key: str, tmp_path: Path
) -> None:
    """A worker SIGKILLed holding poison and good entries: the next one delivers the good."""
    keys = RedisKeys("poison")
    client = redis.Redis.from_url(own_redis.url)
    workers = Workers(own_redis.url, keys.prefix, standin.url, api_key, tmp_path)
    try:
        client.set(keys.incident(WRONG_TYPE_ID), "not a hash")
        by_name = {case.name: case for case in ENTRIES}
        poison = [
            by_name["event_non_utf8_value"],
            by_name["event_deep_array"],
            by_name["non_utf8_field_name_for_kind"],
            WRONG_TYPE,
        ]
        # Poison first: it leads the dead worker's pending list.
        held: list[dict[bytes, bytes]] = [case.data for case in poison]
        held += [good_entry(n) for n in range(20)]
        die_holding(workers, client, keys, held)
        ids = streams.entries(client, keys.ingest)
        bad = {eid.decode(): case for (eid, _), case in zip(ids, poison, strict=False)}
        # Pages of 3: the poison fills the first pages of every reclaim.
        workers.start(FORWARDER_RECLAIM_IDLE_S="0.2", FORWARDER_INGEST_BATCH="3")
        wanted = {f"hostile-good-{n:06d}" for n in range(20)}
        wait_until(
            lambda: wanted <= set(standin.latest()),
            timeout_s=60,
            what="the dead worker's good entries delivered",
        )
        wait_until(lambda: client.xlen(keys.dead) == len(poison), timeout_s=30, what="letters")
        check_letters(client, keys, bad)
        assert client.xpending(keys.ingest, CONSUMER_GROUP)["pending"] == 0
    finally:
        workers.stop_all()
        client.close()
        assert api_key not in workers.logs()
