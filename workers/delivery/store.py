"""Redis side of the workers: the ingest stream, incident state, claims and settlements.

Only carries out decisions made elsewhere (``_fold``, ``_outcome``); every multi-key change
is one Lua script, so a crash between two commands cannot half-apply it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from forwarder.protocol import CONSUMER_GROUP, RedisKeys
from workers.delivery.fold import FoldPlan
from workers.delivery.gate import GateUpdate
from workers.delivery.records import Claim, ClaimResult, FoldResult, Settlement, SettleResult

log = logging.getLogger("dora_forwarder.store")

_BOOKKEEPING: Final = ("version", "sent", "attempt", "first_ms", "failing_since_ms", "pub_ms")


def _script(name: str) -> str:
    """A script's text, after the prelude its helpers (clock, ms formatting) come from."""
    folder = resources.files("workers.delivery").joinpath("lua")
    return folder.joinpath("_prelude.lua").read_text() + folder.joinpath(name).read_text()


class Store:
    """The Redis operations of one worker process (async, one connection pool)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self.keys = keys
        self._fold = client.register_script(_script("fold.lua"))
        self._claim = client.register_script(_script("claim.lua"))
        self._settle = client.register_script(_script("settle.lua"))
        self._heartbeat = client.register_script(_script("heartbeat.lua"))

    async def ensure_group(self) -> None:
        """Create the consumer group (and stream) unless it exists; read from the start."""
        try:
            await self._redis.xgroup_create(self.keys.ingest, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _without_group(self, exc: ResponseError) -> None:
        """Recreate a consumer group that vanished, or re-raise ``exc``.

        A Redis that restarted without persistence has lost the stream and its group; new
        publishes recreate the stream, and the group must follow, or every read fails.
        """
        if "NOGROUP" not in str(exc):
            raise exc
        log.warning(
            "the ingest stream's consumer group is gone (Redis restarted without "
            "persistence?); creating it again"
        )
        await self.ensure_group()

    async def read(
        self, consumer: str, count: int, block_ms: int | None
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """New entries for ``consumer``; waits up to ``block_ms`` when there are none."""
        # RESP2 reply: [[stream, [(id, fields), ...]]] (redis-py types it for RESP3 too).
        try:
            reply: Any = await self._redis.xreadgroup(
                CONSUMER_GROUP, consumer, {self.keys.ingest: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            await self._without_group(exc)
            return []
        if not reply:
            return []
        return cast(list[tuple[bytes, dict[bytes, bytes]]], reply[0][1])

    async def reclaim(
        self, consumer: str, min_idle_ms: int, count: int, start: str = "0-0"
    ) -> tuple[str, list[tuple[bytes, dict[bytes, bytes]]]]:
        """Entries another consumer read but never acknowledged within ``min_idle_ms``.

        Scans the pending list from ``start`` and returns ``(where the next scan starts,
        entries)``; the next start is ``0-0`` once the scan went round. An entry deleted
        while pending is acknowledged here: there is nothing left of it to fold.
        """
        try:
            reply = await self._redis.xautoclaim(
                self.keys.ingest, CONSUMER_GROUP, consumer, min_idle_ms, start, count=count
            )
        except ResponseError as exc:
            await self._without_group(exc)
            return "0-0", []
        cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        entries = [(eid, fields) for eid, fields in reply[1] if eid is not None and fields]
        # Redis 7 drops deleted entries from the pending list itself (and lists their ids
        # third); Redis 6.2 hands them out as empty entries, forever unless acknowledged.
        gone = [eid for eid, fields in reply[1] if eid is not None and not fields]
        if gone:
            await self._redis.xack(self.keys.ingest, CONSUMER_GROUP, *gone)
        return cursor, entries

    async def forget_idle_consumers(self, keep: str, idle_ms: int) -> int:
        """Drop consumers with nothing pending and idle for ``idle_ms``: dead processes.

        Every worker process reads under a name of its own, so restarts would otherwise
        grow the group forever. A live consumer dropped by mistake is recreated by its
        next read; one with pending entries is never dropped (they await reclaim).
        """
        dropped = 0
        try:
            consumers = await self._redis.xinfo_consumers(self.keys.ingest, CONSUMER_GROUP)
        except ResponseError as exc:
            await self._without_group(exc)
            return 0
        for info in consumers:
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if name != keep and int(info["pending"]) == 0 and int(info["idle"]) >= idle_ms:
                await self._redis.xgroup_delconsumer(self.keys.ingest, CONSUMER_GROUP, name)
                dropped += 1
        return dropped

    async def fold(self, plan: FoldPlan, *, retention_ms: int, orphan_wait_ms: int) -> FoldResult:
        """Apply ``plan`` and acknowledge its entries, in one atomic step."""
        keys = [
            self.keys.ingest,
            self.keys.due,
            self.keys.inflight,
            self.keys.dead,
            self.keys.stats,
        ]
        args: list[str | int] = [CONSUMER_GROUP, retention_ms, orphan_wait_ms, len(plan.ack_ids)]
        args.extend(plan.ack_ids)
        args.append(len(plan.poison))
        for poison in plan.poison:
            args.extend(
                (
                    poison.entry_id,
                    poison.reason,
                    poison.payload,
                    poison.encoding,
                    poison.size_bytes,
                    int(poison.truncated),
                )
            )
        for update in plan.updates:
            keys.append(self.keys.incident(update.incident_id))
            args.extend((update.incident_id, int(update.force), len(update.fields)))
            for item in update.fields:
                args.extend((item.field, item.position, item.value))
        changed, unchanged, poison_count = await self._fold(keys=keys, args=args)
        return FoldResult(int(changed), int(unchanged), int(poison_count))

    async def claim(
        self,
        limit: int,
        lease_ms: int,
        token: str,
        *,
        probe_ms: int,
        ceiling_per_s: float | None = None,
        now_ms: int | None = None,
    ) -> ClaimResult:
        """Claim up to ``limit`` due incidents if the fleet's gate allows; see ``claim.lua``."""
        reply = await self._claim(
            keys=[self.keys.due, self.keys.inflight, self.keys.stats, self.keys.gate],
            args=[
                self.keys.incident_prefix,
                limit,
                lease_ms,
                token,
                probe_ms,
                ceiling_per_s or 0,
                "" if now_ms is None else now_ms,
            ],
        )
        return ClaimResult(
            now_ms=int(reply[0]),
            wait_ms=int(reply[1]),
            gate_reason=reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2]),
            claims=[_claim_from(row, int(reply[0])) for row in reply[3:]],
        )

    async def settle(
        self,
        token: str,
        settlements: Sequence[Settlement],
        gate: GateUpdate,
        *,
        now_ms: int | None = None,
    ) -> SettleResult:
        """Record outcomes and the gate's update in one step; see ``settle.lua``."""
        budget = gate.budget
        args: list[str | int] = [
            self.keys.incident_prefix,
            token,
            "" if now_ms is None else now_ms,
            gate.close_ms,
            gate.close_reason,
            gate.close_detail,
            budget.limit if budget else 0,
            budget.remaining if budget else 0,
            budget.reset_ms if budget else 0,
            budget.period_ms if budget else 0,
            int(gate.unlimited),
            int(gate.answered),
        ]
        for s in settlements:
            args.extend((s.incident_id, s.version, s.verdict, s.delay_ms, s.reason, s.detail))
        reply = await self._settle(
            keys=[
                self.keys.due,
                self.keys.inflight,
                self.keys.dead,
                self.keys.stats,
                self.keys.gate,
            ],
            args=args,
        )
        delivered, retried, dead, stale, newly_closed = (int(x) for x in reply)
        return SettleResult(delivered, retried, dead, stale, bool(newly_closed))

    async def heartbeat(self, consumer: str, forget_after_ms: int) -> None:
        """Record that ``consumer`` is alive now; forget those silent ``forget_after_ms``."""
        await self._heartbeat(keys=[self.keys.workers], args=[consumer, forget_after_ms])

    async def redis_time_ms(self) -> int:
        """Redis' clock in milliseconds: the one clock every worker's due times use."""
        seconds, micros = await self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def next_due_in_ms(self) -> int | None:
        """Milliseconds until the earliest due incident (0 if overdue), None if none is due."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.time()
        pipe.zrange(self.keys.due, 0, 0, withscores=True)
        (seconds, micros), first = await pipe.execute()
        if not first:
            return None
        return max(0, int(first[0][1]) - (int(seconds) * 1000 + int(micros) // 1000))


def _claim_from(row: Sequence[bytes], claimed_at_ms: int) -> Claim:
    incident_id = row[0].decode()
    attributes: dict[str, Any] = {}
    numbers: dict[str, int] = {}
    for name, value in zip(row[1::2], row[2::2], strict=True):
        key = name.decode()
        if key.startswith("a:"):
            attributes[key[2:]] = json.loads(value)
        elif key in _BOOKKEEPING:
            numbers[key] = int(value)
    return Claim(
        incident_id=incident_id,
        version=numbers.get("version", 0),
        sent_version=numbers.get("sent", 0),
        attempt=numbers.get("attempt", 0),
        first_seen_ms=numbers.get("first_ms", 0),
        failing_since_ms=numbers.get("failing_since_ms"),
        attributes=attributes,
        claimed_at_ms=claimed_at_ms,
        published_ms=numbers.get("pub_ms"),
    )
