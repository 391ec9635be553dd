"""Stream dead letters whatever their bytes, and folds that can fail on one entry only.

Real Redis and the real scripts: letters of binary and oversized entries are listed and
replayed byte for byte (or kept, when cut); a letter someone wrote by hand does not break
``dead-letters``; the reclaim scan goes round the whole pending list; a fold script that
fails on one entry dead-letters that entry alone, once; a key every fold needs holding the
wrong type keeps the entries pending instead.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, cast

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from forwarder.protocol import CONSUMER_GROUP, RedisKeys
from harness import streams
from workers.cli import main
from workers.delivery.fold import plan_fold
from workers.delivery.intake import Intake
from workers.delivery.store import Store

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

pytestmark = pytest.mark.anyio


def good(number: int) -> dict[bytes, bytes]:
    event = {"id": f"letters-incident-{number:04d}", "started_at": 1_700_000_000, "team": "t"}
    return {b"v": b"1", b"kind": b"failure", b"event": json.dumps(event).encode()}


BINARY = {b"v": b"1", b"kind": b"failure", b"event": b"\xff\x00{", b"\xfe": b"\x80"}
HUGE = {b"v": b"1", b"kind": b"failure", b"event": b"[" + b"1," * 200_000}


def intake(store: Store) -> Intake:
    return Intake(store, retention_ms=3_600_000, orphan_wait_ms=60_000)


async def add(client: aioredis.Redis, keys: RedisKeys, *entries: dict[bytes, bytes]) -> list[str]:
    added = [await client.xadd(keys.ingest, cast("dict[FieldT, EncodableT]", e)) for e in entries]
    return [cast(bytes, entry_id).decode() for entry_id in added]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str) -> None:
    monkeypatch.setenv("FORWARDER_REDIS_URL", redis_url)
    monkeypatch.setenv("FORWARDER_KEY_PREFIX", prefix)


@pytest.mark.usefixtures("env")
async def test_dead_letters_list_and_replay_any_letter(
    store: Store,
    client: aioredis.Redis,
    keys: RedisKeys,
    sync_redis: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Binary letters replay byte for byte; cut and hand-written ones are listed and kept."""
    await add(client, keys, BINARY, HUGE)
    await store.fold(
        plan_fold(await store.read("c", 10, None)), retention_ms=60_000, orphan_wait_ms=60_000
    )
    await client.xadd(
        keys.dead,
        {b"source": b"\xff", b"at_ms": b"soon", b"reason": b"\x1b[2J\xff", b"payload": b"\xff"},
    )
    assert main(["dead-letters", "list"]) == 0
    table = capsys.readouterr().out
    assert "\x1b" not in table
    assert main(["dead-letters", "list", "--json"]) == 0
    binary, huge, by_hand = json.loads(capsys.readouterr().out)
    assert binary["payload_encoding"] == "base64"
    assert binary["payload_bytes"] == sum(len(k) + len(v) for k, v in BINARY.items())
    assert huge["payload_truncated"] is True
    assert by_hand["payload"] == {"unparsed": "\\xff"}
    assert main(["dead-letters", "replay", "--all"]) == 0
    err = capsys.readouterr().err
    assert "replayed 1 dead letter(s)" in err
    assert "kept 2 dead letter(s)" in err
    ((_, replayed),) = streams.entries(sync_redis, keys.ingest)
    assert replayed == {**BINARY, b"replay": b"1"}
    kept = [letter_id.decode() for letter_id, _ in streams.entries(sync_redis, keys.dead)]
    assert kept == [huge["id"], by_hand["id"]]


async def test_reclaim_goes_round_the_whole_pending_list(
    store: Store, client: aioredis.Redis, keys: RedisKeys
) -> None:
    """Page after page from where the last stopped; deleted entries do not stay pending."""
    ids = await add(client, keys, *(good(n) for n in range(7)))
    assert len(await store.read("dead-worker", 100, None)) == 7
    await client.xdel(keys.ingest, ids[0], ids[3])
    taker = intake(store)
    seen: list[str] = []
    for _ in range(10):
        seen += [eid.decode() for eid, _ in await taker.reclaim("live-worker", 0, 2)]
        if taker.reclaim_went_round:
            break
    assert seen == [ids[n] for n in (1, 2, 4, 5, 6)]
    await taker.fold([(eid.encode(), good(0)) for eid in seen])
    assert (await client.xpending(keys.ingest, CONSUMER_GROUP))["pending"] == 0


async def test_a_fold_that_fails_on_one_entry_dead_letters_it_alone(
    store: Store, client: aioredis.Redis, keys: RedisKeys
) -> None:
    """An incident stored as a string: its entry is a dead letter, once; the rest fold."""
    await client.set(keys.incident("letters-incident-0001"), "not a hash")
    ids = await add(client, keys, good(0), good(1), BINARY, good(2))
    folded = await intake(store).fold(await store.read("c", 10, None))
    assert folded.entries == 4
    letters = [f for _, f in await streams.entries_async(client, keys.dead)]
    assert sorted(f[b"entry_id"].decode() for f in letters) == sorted([ids[1], ids[2]])
    wrong = next(f for f in letters if f[b"entry_id"] == ids[1].encode())
    assert wrong[b"reason"].startswith(b"the fold script failed on it: WRONGTYPE")
    assert await client.zscore(keys.due, "letters-incident-0000") is not None
    assert await client.zscore(keys.due, "letters-incident-0002") is not None
    assert (await client.xpending(keys.ingest, CONSUMER_GROUP))["pending"] == 0


async def test_a_key_every_fold_needs_of_the_wrong_type_keeps_entries_pending(
    store: Store, client: aioredis.Redis, keys: RedisKeys
) -> None:
    """The due set stored as a string: no entry is dead-lettered for it, all stay pending."""
    await client.set(keys.due, "not a sorted set")
    await add(client, keys, good(0), BINARY)
    with pytest.raises(ResponseError, match="BADKEY"):
        await intake(store).fold(await store.read("c", 10, None))
    assert await client.xlen(keys.dead) == 0
    assert (await client.xpending(keys.ingest, CONSUMER_GROUP))["pending"] == 2


async def test_a_pinned_clock_reaches_every_fold(
    store: Store, client: aioredis.Redis, keys: RedisKeys
) -> None:
    """``now_ms`` dates the states of a batch, and of each entry when it is folded alone."""
    now_ms = 4_000_000_000_000  # far from Redis' clock
    await client.set(keys.incident("letters-incident-0001"), "not a hash")  # one by one
    await add(client, keys, good(0), good(1))
    await intake(store).fold(await store.read("c", 10, None), now_ms=now_ms)
    await add(client, keys, good(2))
    await intake(store).fold(await store.read("c", 10, None), now_ms=now_ms + 1)
    assert await client.zscore(keys.due, "letters-incident-0000") == now_ms
    assert await client.zscore(keys.due, "letters-incident-0002") == now_ms + 1
