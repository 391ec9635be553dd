"""One worker process's loop: ingest the stream and deliver due incidents, concurrently.

A pump runs for a bounded time (a Celery task's budget), then stops claiming, waits for
its requests in flight, settles them and returns: nothing is held in memory between runs,
and the backlog stays in Redis (at most ``max_in_flight`` claims per process).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from forwarder._errors import field_errors
from forwarder._models import IncidentEvent
from workers._backoff import BackoffPolicy
from workers._fold import is_complete, plan_fold
from workers._outcome import Attempt, Verdict, decide
from workers._sender import MAX_BODY_KEPT, Sender
from workers._store import Claim, Settlement, Store

log = logging.getLogger("dora_forwarder.pump")

IDLE_POLL_S = 1.0
"""Longest an idle process waits before looking for due work folded by other processes."""


@dataclass(frozen=True, slots=True)
class PumpConfig:
    """The tunables a pump needs, in the units it uses."""

    consumer: str
    ingest_batch: int
    max_in_flight: int
    lease_ms: int
    reclaim_idle_ms: int
    orphan_wait_ms: int
    retention_ms: int
    backoff: BackoffPolicy


@dataclass(slots=True)
class PumpReport:
    """What one run did, for logs and tests."""

    entries: int = 0
    dead_entries: int = 0
    sent: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class Pump:
    """Ingest and delivery of one process; build one per process and ``run`` it repeatedly."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        config: PumpConfig,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._store = store
        self._sender = sender
        self._config = config
        self._clock = clock
        self._group_ready = False

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def run(self, budget_s: float) -> PumpReport:
        """Work for ``budget_s`` seconds, then finish what is in flight and return."""
        if not self._group_ready:
            await self._store.ensure_group()
            self._group_ready = True
        deadline = self._now() + budget_s
        report = PumpReport()
        wake = asyncio.Event()
        ingest = asyncio.create_task(self._ingest(deadline, wake, report))
        try:
            await self._deliver(deadline, wake, report)
        finally:
            await ingest
        return report

    async def _ingest(self, deadline: float, wake: asyncio.Event, report: PumpReport) -> None:
        config = self._config
        entries = await self._store.reclaim(
            config.consumer, config.reclaim_idle_ms, config.ingest_batch
        )
        while True:
            if entries:
                plan = plan_fold(entries)
                result = await self._store.fold(
                    plan, retention_ms=config.retention_ms, orphan_wait_ms=config.orphan_wait_ms
                )
                report.entries += len(plan.ack_ids)
                report.dead_entries += result.poison
                for poison in plan.poison:
                    log.error("dead letter: stream entry %s: %s", poison.entry_id, poison.reason)
                if result.changed:
                    wake.set()
            remaining_ms = int((deadline - self._now()) * 1000)
            if remaining_ms <= 0:
                return
            # BLOCK 0 would wait forever: always at least 1 ms.
            entries = await self._store.read(
                config.consumer, config.ingest_batch, max(1, min(remaining_ms, 1000))
            )

    async def _deliver(self, deadline: float, wake: asyncio.Event, report: PumpReport) -> None:
        config = self._config
        token = uuid.uuid4().hex
        in_flight: dict[asyncio.Task[Attempt], Claim] = {}
        settled: list[Settlement] = []
        refill_at = max(1, config.max_in_flight // 4)
        while True:
            accepting = self._now() < deadline
            free = config.max_in_flight - len(in_flight)
            claimed = 0
            if accepting and free >= (1 if not in_flight else refill_at):
                if settled:
                    await self._settle(token, settled, report)
                now_ms, claims = await self._store.claim(free, config.lease_ms, token)
                claimed = len(claims)
                for claim in claims:
                    early = self._without_sending(claim, now_ms)
                    if early is not None:
                        settled.append(early)
                    else:
                        task = asyncio.create_task(self._sender.send(claim.attributes))
                        in_flight[task] = claim
                        report.sent += 1
            if in_flight:
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    claim = in_flight.pop(task)
                    settled.append(self._settlement(claim, task.result()))
                if len(settled) >= refill_at or not in_flight:
                    await self._settle(token, settled, report)
                continue
            if settled:
                await self._settle(token, settled, report)
            if not accepting:
                return
            if claimed < free:
                await self._idle(deadline, wake, now_ms)

    async def _idle(self, deadline: float, wake: asyncio.Event, now_ms: int) -> None:
        next_due_ms = await self._store.next_due_in_ms(now_ms)
        wait_s = min(IDLE_POLL_S, deadline - self._now())
        if next_due_ms is not None:
            wait_s = min(wait_s, next_due_ms / 1000)
        if wait_s > 0:
            try:
                async with asyncio.timeout(wait_s):
                    await wake.wait()
            except TimeoutError:
                pass
        wake.clear()

    def _without_sending(self, claim: Claim, now_ms: int) -> Settlement | None:
        """A settlement for claims that must not be sent, or None to send."""
        if claim.version <= claim.sent_version:
            # Already delivered (a lapsed lease came back): settling is enough.
            return Settlement(claim.incident_id, claim.version, Verdict.DELIVERED, reason="sent")
        if not is_complete(claim.attributes):
            waited_ms = now_ms - claim.first_seen_ms
            if waited_ms < self._config.orphan_wait_ms:
                return Settlement(
                    claim.incident_id,
                    claim.version,
                    Verdict.WAIT,
                    delay_ms=self._config.orphan_wait_ms - waited_ms,
                    reason="finish waiting for its start",
                )
            return self._dead(
                claim,
                f"a finish for incident {claim.incident_id} waited {waited_ms / 1000:.0f} s "
                "for its start, which never arrived (FORWARDER_ORPHAN_WAIT_S)",
            )
        try:
            IncidentEvent.model_validate(claim.attributes)
        except ValidationError as exc:
            reasons = "; ".join(str(error) for error in field_errors(exc))
            return self._dead(claim, f"merged incident is invalid: {reasons}")
        return None

    def _settlement(self, claim: Claim, attempt: Attempt) -> Settlement:
        decision = decide(attempt, failures_so_far=claim.attempt, backoff=self._config.backoff)
        if decision.verdict is Verdict.DEAD:
            return self._dead(claim, decision.reason, attempt)
        if decision.verdict is Verdict.RETRY:
            log.warning(
                "retry incident=%s attempt=%d in=%.1fs reason=%s",
                claim.incident_id,
                claim.attempt + 1,
                decision.delay_s,
                decision.reason,
            )
        else:
            log.info(
                "delivered incident=%s status=%s attempt=%d",
                claim.incident_id,
                attempt.status,
                claim.attempt + 1,
            )
        return Settlement(
            claim.incident_id,
            claim.version,
            decision.verdict,
            delay_ms=int(decision.delay_s * 1000),
            reason=decision.reason,
        )

    def _dead(self, claim: Claim, reason: str, attempt: Attempt | None = None) -> Settlement:
        log.error("dead letter: incident=%s reason=%s", claim.incident_id, reason)
        detail = {
            "status": attempt.status if attempt else None,
            "response": attempt.body[:MAX_BODY_KEPT] if attempt else None,
            "attributes": claim.attributes,
            "attempts": claim.attempt + (1 if attempt else 0),
        }
        return Settlement(
            claim.incident_id,
            claim.version,
            Verdict.DEAD,
            reason=reason,
            detail=json.dumps(detail, separators=(",", ":")),
        )

    async def _settle(self, token: str, settled: list[Settlement], report: PumpReport) -> None:
        await self._store.settle(token, settled)
        for item in settled:
            report.outcomes[item.verdict] = report.outcomes.get(item.verdict, 0) + 1
        settled.clear()
