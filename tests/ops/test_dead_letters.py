"""dead-letters list / replay / purge, on letters made by the real scripts in real Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
import redis.asyncio as aioredis

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import RedisKeys
from harness import streams
from workers.cli import main
from workers.delivery.fold import plan_fold
from workers.delivery.gate import GateUpdate
from workers.delivery.records import Settlement, Verdict
from workers.delivery.store import Store

ID = "incident-0000000001"
START = {"id": ID, "started_at": 1_700_000_000, "team": "payments"}


pytestmark = pytest.mark.usefixtures("redis_env")


@pytest.fixture
def letters(redis_url: str, keys: RedisKeys, sync_redis: redis.Redis) -> list[str]:
    """Two dead letters: a poison stream entry, and an incident Datadog rejected (400)."""

    async def make() -> None:
        client = aioredis.Redis.from_url(redis_url)
        store = Store(client, keys)
        await store.ensure_group()
        await client.hset(keys.gate, "unlimited_ms", 10**15)
        await client.xadd(keys.ingest, {"v": "1", "kind": "failure", "event": "{oops"})
        await client.xadd(keys.ingest, encode_entry(to_event(START)))
        entries = await store.read("c", 10, None)
        await store.fold(plan_fold(entries), retention_ms=60_000, orphan_wait_ms=60_000)
        claimed = await store.claim(10, 60_000, "t", probe_ms=1_000)
        detail = json.dumps(
            {"status": 400, "response": "unknown team", "attributes": claimed.claims[0].attributes}
        )
        await store.settle(
            "t",
            [
                Settlement(
                    ID,
                    claimed.claims[0].version,
                    Verdict.DEAD,
                    0,
                    "rejected by Datadog (HTTP 400)",
                    detail,
                )
            ],
            GateUpdate(),
        )
        await client.aclose()

    asyncio.run(make())
    return [letter_id.decode() for letter_id, _ in streams.entries(sync_redis, keys.dead)]


def test_list_as_table_and_json(letters: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Each letter shows its id, what died and why; --json carries the details."""
    assert main(["dead-letters", "list"]) == 0
    table = capsys.readouterr().out
    assert letters[0] in table
    assert "(stream entry)" in table
    assert "event is not valid JSON" in table
    assert ID in table
    assert "rejected by Datadog (HTTP 400)" in table
    assert main(["dead-letters", "list", "--json"]) == 0
    poison, rejected = json.loads(capsys.readouterr().out)
    assert poison["payload"]["event"] == "{oops"
    assert rejected["detail"]["response"] == "unknown team"


def test_replay_sends_the_letter_back_through_ingest(
    letters: list[str],
    capsys: pytest.CaptureFixture[str],
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """Replay re-enqueues the incident's state, marked to be delivered again, and deletes it."""
    assert main(["dead-letters", "replay", letters[1]]) == 0
    assert "replayed 1 dead letter(s)" in capsys.readouterr().err
    ((_, entry),) = streams.entries(sync_redis, keys.ingest)
    assert entry[b"replay"] == b"1"
    assert json.loads(entry[b"event"])["id"] == ID
    assert [i.decode() for i, _ in streams.entries(sync_redis, keys.dead)] == [letters[0]]


def test_replayed_state_is_due_again_even_unchanged(
    letters: list[str], redis_url: str, keys: RedisKeys, sync_redis: redis.Redis
) -> None:
    """Dedupe does not swallow a replay: the incident is due again after folding it."""
    main(["dead-letters", "replay", "--all"])

    async def fold() -> None:
        client = aioredis.Redis.from_url(redis_url)
        store = Store(client, keys)
        entries = await store.read("c", 10, None)
        await store.fold(plan_fold(entries), retention_ms=60_000, orphan_wait_ms=60_000)
        await client.aclose()

    asyncio.run(fold())
    assert sync_redis.zscore(keys.due, ID) is not None


def test_purge_needs_yes(
    letters: list[str],
    capsys: pytest.CaptureFixture[str],
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """Purge refuses without --yes, then deletes for good."""
    assert main(["dead-letters", "purge", "--all"]) == 1
    assert "add --yes" in capsys.readouterr().err
    assert sync_redis.xlen(keys.dead) == 2
    assert main(["dead-letters", "purge", "--all", "--yes"]) == 0
    assert "purged 2 dead letter(s)" in capsys.readouterr().err
    assert sync_redis.xlen(keys.dead) == 0


def test_unknown_id_and_missing_selection(
    letters: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Naming nothing, or an id that is not a dead letter, is a clear error."""
    assert main(["dead-letters", "replay"]) == 1
    assert "use --all" in capsys.readouterr().err
    assert main(["dead-letters", "replay", "1-1"]) == 1
    assert "no dead letter with id 1-1" in capsys.readouterr().err


def test_empty_list(capsys: pytest.CaptureFixture[str]) -> None:
    """No letters: says so."""
    assert main(["dead-letters", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no dead letters"
