"""Redis side of the workers: the ingest stream, incident state, claims and settlements.

Only carries out decisions made elsewhere (``fold``, ``outcome``, ``gate``); every multi-key
change is one Lua script (``scripts`` builds their arguments), so a crash between two commands
cannot half-apply it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from forwarder.protocol import (
    ATTRIBUTE_PREFIX,
    CONSUMER_GROUP,
    KIND_DEPLOYMENT,
    STATE_DEPLOYMENT_VERSION,
    RedisKeys,
    state_id,
)
from forwarder.replicas import Replicas
from workers.delivery.breaker import BreakerPolicy, BreakerUpdate
from workers.delivery.claim_rows import claim_from_row, reply_text, version_name
from workers.delivery.fold import FoldPlan
from workers.delivery.gate import REASON_AUTH, GateUpdate
from workers.delivery.records import (
    Claim,
    ClaimResult,
    FoldResult,
    Settlement,
    SettleResult,
    TickCheck,
)
from workers.delivery.replication import ReplicatedScripts
from workers.delivery.scripts import (
    CLAIM,
    FOLD,
    FORGET_CONSUMERS,
    HEARTBEAT,
    LIFT_AUTH_PAUSE,
    SETTLE,
    TICK,
    ClaimArgs,
    FoldArgs,
    ForgetConsumersArgs,
    HeartbeatArgs,
    LiftAuthPauseArgs,
    SettleArgs,
    TickArgs,
)

log = logging.getLogger("dora_forwarder.store")

_VERSION_FIELDS: Final = [ATTRIBUTE_PREFIX + name for name in ("service", "env", "version")]
"""The fields that name a deployment for a PATCH by version, as claim_rows.version_name reads
them from the PATCH's side."""

DEFAULT_RETENTION_MS: Final = 30 * 86_400_000
"""How long a quiet state is kept (``FORWARDER_RETENTION_S``'s default)."""

DEFAULT_FINISHED_RETENTION_MS: Final = 400 * 86_400_000
"""How long a delivered finish is remembered (``FORWARDER_FINISHED_RETENTION_S``'s default)."""

DEFAULT_BREAKER: Final = BreakerPolicy()
NO_ANSWERS: Final = BreakerUpdate()


class Store:
    """The Redis operations of one worker process (async, one connection pool)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: RedisKeys,
        replicas: Replicas | None = None,
        on_shortfall: Callable[[str], None] | None = None,
    ) -> None:
        """``replicas``: folds and settlements wait for them (see ``replication``);
        ``on_shortfall`` is told of each one that fell short (``"fold"``, ``"settle"``)."""
        self._redis = client
        self.keys = keys
        self._replicated = ReplicatedScripts(client, replicas or Replicas(), on_shortfall)
        self._fold = client.register_script(FOLD.text())
        self._claim = client.register_script(CLAIM.text())
        self._settle = client.register_script(SETTLE.text())
        self._heartbeat = client.register_script(HEARTBEAT.text())
        self._forget_consumers = client.register_script(FORGET_CONSUMERS.text())
        self._tick = client.register_script(TICK.text())

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

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
        cursor = reply_text(reply[0])
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
        next read; one with pending entries is never dropped (they await reclaim). Checked
        and dropped in one script, so that entries read meanwhile keep their pending record.
        """
        keys, args = FORGET_CONSUMERS.call(
            self.keys, ForgetConsumersArgs(CONSUMER_GROUP, keep, idle_ms)
        )
        try:
            return int(await self._forget_consumers(keys=keys, args=args))
        except ResponseError as exc:
            await self._without_group(exc)
            return 0

    async def fold(
        self,
        plan: FoldPlan,
        *,
        retention_ms: int,
        orphan_wait_ms: int,
        now_ms: int | None = None,
    ) -> FoldResult:
        """Apply ``plan`` and acknowledge its entries, in one atomic step; see ``fold.lua``."""
        keys, args = FOLD.call(
            self.keys,
            FoldArgs(
                CONSUMER_GROUP,
                retention_ms,
                orphan_wait_ms,
                self.keys.finished_prefix,
                self.keys.second_prefix,
                self.keys.version_prefix,
                now_ms,
                plan.ack_ids,
                plan.poison,
                plan.updates,
            ),
            [update.incident_id for update in plan.updates],
        )
        reply = await self._replicated.run(self._fold, keys, args, "fold")
        changed, unchanged, poison_count = reply
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
        breaker: BreakerPolicy = DEFAULT_BREAKER,
    ) -> ClaimResult:
        """Claim up to ``limit`` due incidents if the fleet's gate allows; see ``claim.lua``."""
        keys, args = CLAIM.call(
            self.keys,
            ClaimArgs(
                self.keys.incident_prefix,
                limit,
                lease_ms,
                token,
                probe_ms,
                ceiling_per_s or 0,
                now_ms,
                breaker.probe_ms,
                breaker.probe_max_ms,
            ),
        )
        reply = await self._claim(keys=keys, args=args)
        now, app_key_until = int(reply[0]), int(reply[3])
        claims = [claim_from_row(row, now, app_key_until) for row in reply[5:]]
        return ClaimResult(
            now_ms=now,
            wait_ms=int(reply[1]),
            gate_reason=reply_text(reply[2]),
            claims=await self._with_pending_deployments(claims),
            gate_reopened=reply_text(reply[4]),
        )

    async def _with_pending_deployments(self, claims: list[Claim]) -> list[Claim]:
        """Claims of PATCHes by version, each told which deployment of its service, env
        and version (the one folded last) still waits to be posted, if one does.

        Two round trips, and only when such a PATCH (a Datadog preview) is claimed. The
        batch is in flight already: a key of another type (written by hand) names no
        deployment, instead of raising.
        """
        by_version = [
            (index, claim)
            for index, claim in enumerate(claims)
            if claim.kind == STATE_DEPLOYMENT_VERSION and claim.problem is None
        ]
        if not by_version:
            return claims
        names = [version_name(claim.attributes) or "" for _, claim in by_version]
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.get(self.keys.version_prefix + name)  # "": a key never set, so None
        replies = await pipe.execute(raise_on_error=False)
        holders = [
            h.decode(errors="replace") if isinstance(h, bytes) and h else None for h in replies
        ]
        pipe = self._redis.pipeline(transaction=False)
        for holder in holders:
            state = state_id(KIND_DEPLOYMENT, holder or "")
            pipe.hmget(self.keys.incident(state), _VERSION_FIELDS)
            pipe.zscore(self.keys.due, state)
            pipe.zscore(self.keys.inflight, state)
        found = await pipe.execute(raise_on_error=False)
        updated = list(claims)
        for slot, ((index, claim), name, holder) in enumerate(
            zip(by_version, names, holders, strict=True)
        ):
            fields, due, in_flight = found[3 * slot : 3 * slot + 3]
            if isinstance(fields, ResponseError):
                continue  # the deployment's state is no hash: claim.lua dead-letters it
            same = [f.decode(errors="replace") if f else "null" for f in fields]
            if holder and name == " ".join(same) and (due is not None or in_flight is not None):
                updated[index] = dataclasses.replace(claim, waits_for=holder)
        return updated

    async def settle(
        self,
        token: str,
        settlements: Sequence[Settlement],
        gate: GateUpdate,
        *,
        now_ms: int | None = None,
        retention_ms: int = DEFAULT_RETENTION_MS,
        finished_retention_ms: int = DEFAULT_FINISHED_RETENTION_MS,
        breaker_update: BreakerUpdate = NO_ANSWERS,
        breaker: BreakerPolicy = DEFAULT_BREAKER,
    ) -> SettleResult:
        """Record outcomes, the gate's and the breaker's update in one step; see ``settle.lua``.

        A state left quiet (delivered or dead-lettered, nothing newer) expires after
        ``retention_ms``; a delivered finish is remembered for ``finished_retention_ms``.
        """
        budget = gate.budget
        keys, args = SETTLE.call(
            self.keys,
            SettleArgs(
                prefix=self.keys.incident_prefix,
                token=token,
                now_ms=now_ms,
                retention_ms=retention_ms,
                finished_prefix=self.keys.finished_prefix,
                finished_retention_ms=finished_retention_ms,
                close_ms=gate.close_ms,
                close_reason=gate.close_reason,
                close_detail=gate.close_detail,
                budget_limit=budget.limit if budget else 0,
                remaining=budget.remaining if budget else 0,
                reset_ms=budget.reset_ms if budget else 0,
                period_ms=budget.period_ms if budget else 0,
                unlimited=gate.unlimited,
                answered=gate.answered,
                outages=breaker_update.outages,
                healthy=breaker_update.healthy,
                breaker_failures=breaker.failures,
                breaker_probe_ms=breaker.probe_ms,
                app_key_close_ms=gate.app_key_close_ms,
                app_key_detail=gate.app_key_detail,
                app_key_works=gate.app_key_works,
                settlements=tuple(settlements),
            ),
        )
        reply = await self._replicated.run(self._settle, keys, args, "settle")
        delivered, retried, dead, stale, newly_closed, breaker_change, app_key_paused = (
            int(x) for x in reply
        )
        return SettleResult(
            delivered,
            retried,
            dead,
            stale,
            bool(newly_closed),
            breaker_opened=breaker_change > 0,
            breaker_closed=breaker_change < 0,
            app_key_newly_paused=bool(app_key_paused),
        )

    async def take_app_key_probe(self, token: str, hold_ms: int) -> bool:
        """Whether this claim may probe a refused application key: one fleet-wide at a time,
        for at most ``hold_ms`` (its answer then pauses or lifts the pause)."""
        return bool(await self._redis.set(self.keys.app_key_probe, token, nx=True, px=hold_ms))

    async def heartbeat(self, consumer: str, forget_after_ms: int) -> None:
        """Record that ``consumer`` is alive now; forget those silent ``forget_after_ms``."""
        keys, args = HEARTBEAT.call(self.keys, HeartbeatArgs(consumer, forget_after_ms))
        await self._heartbeat(keys=keys, args=args)

    async def check_tick(
        self, sent_ms: int, max_age_ms: int, *, now_ms: int | None = None
    ) -> TickCheck:
        """How old a tick sent at ``sent_ms`` is (both Redis' clock); count it if too old."""
        keys, args = TICK.call(self.keys, TickArgs(sent_ms, max_age_ms, now_ms))
        age_ms, dropped_total = await self._tick(keys=keys, args=args)
        return TickCheck(age_ms=int(age_ms), dropped_total=int(dropped_total))

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


def lift_auth_pause(client: redis.Redis, keys: RedisKeys) -> bool:
    """Reopen the gate if a refused key closed it (one atomic step); True if it did.

    Synchronous: a worker calls it once before it starts (see ``workers.tasks``).
    """
    names, args = LIFT_AUTH_PAUSE.call(keys, LiftAuthPauseArgs(REASON_AUTH))
    return bool(client.register_script(LIFT_AUTH_PAUSE.text())(keys=names, args=args))
