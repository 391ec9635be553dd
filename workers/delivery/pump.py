"""One worker process's loop: ingest the stream and deliver due incidents, concurrently.

A pump runs for a bounded time (a Celery task's budget), then stops claiming, waits for
its requests in flight, settles them and returns: nothing is held in memory between runs,
and the backlog stays in Redis (at most ``max_in_flight`` claims per process). Asked to
stop (warm shutdown), it gives its claims back at once instead of waiting for answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import redis.exceptions

from workers.delivery.breaker import BreakerPolicy, breaker_update
from workers.delivery.gate import REASON_AUTH, gate_update
from workers.delivery.intake import Entry, Intake
from workers.delivery.observer import NoObserver, PumpObserver
from workers.delivery.operations import ApiRequest
from workers.delivery.outcome_log import log_breaker, log_gate_reopened, log_outcome
from workers.delivery.records import Attempt, Claim, Settlement, Verdict
from workers.delivery.sendable import probes_app_key, wait_for_app_key_probe
from workers.delivery.sender import Sender
from workers.delivery.settlement import SettlementPolicy, before_sending, from_answer
from workers.delivery.store import DEFAULT_FINISHED_RETENTION_MS, Store
from workers.delivery.window import Window

log = logging.getLogger("dora_forwarder.pump")

IDLE_POLL_S = 5.0
"""Longest an idle process waits before looking again for due work it did not fold itself.

New entries wake a process at once (its blocked stream read returns), and so does work it
folded or settled itself; only work made due by another process (one whose pump ended with
it pending) waits this long. Each look is a Redis round trip: an idle fleet's main cost."""

FORGET_CONSUMER_AFTER_MS = 3_600_000
"""A consumer with nothing pending, silent this long, belonged to a process now gone."""

HEARTBEAT_EVERY_S = 5.0
"""How often a running pump tells Redis it is alive (``status`` lists live workers, those
heard from within 15 s); also the longest one blocked stream read."""

REDIS_DOWN_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@dataclass(frozen=True, slots=True)
class PumpConfig:
    """The tunables a pump needs, in the units it uses."""

    consumer: str
    ingest_batch: int
    max_in_flight: int
    lease_ms: int
    reclaim_idle_ms: int
    retention_ms: int
    policy: SettlementPolicy
    finished_retention_ms: int = DEFAULT_FINISHED_RETENTION_MS
    probe_ms: int = 11_000
    ceiling_per_s: float | None = None
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)


@dataclass(slots=True)
class PumpReport:
    """What one run did, for logs and tests."""

    entries: int = 0
    dead_entries: int = 0
    sent: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    redis_error: str | None = None


@dataclass(slots=True)
class _Batch:
    """Settlements not yet recorded, with the answers they came from (for the gate)."""

    settlements: list[Settlement] = field(default_factory=list)
    answers: list[Attempt] = field(default_factory=list)


@dataclass(slots=True)
class _Flight:
    """One run's claims: the token they carry, the requests in flight, the batch to settle."""

    token: str
    in_flight: dict[asyncio.Task[Attempt], tuple[Claim, ApiRequest]] = field(default_factory=dict)
    batch: _Batch = field(default_factory=_Batch)


class Pump:
    """Ingest and delivery of one process; build one per process and ``run`` it repeatedly."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        config: PumpConfig,
        observer: PumpObserver | None = None,
    ) -> None:
        self._store = store
        self._sender = sender
        self._config = config
        self._observer: PumpObserver = observer or NoObserver()
        self._intake = Intake(
            store, retention_ms=config.retention_ms, orphan_wait_ms=config.policy.orphan_wait_ms
        )
        self._group_ready = False
        self._stop: asyncio.Event | None = None
        self._window = Window.start(config.max_in_flight)
        self._peak_in_flight = 0
        self._told_no_app_key = False

    def _note_app_key_wait(self, settlement: Settlement) -> None:
        """Say once per process that PATCH and DELETE wait because DD_APP_KEY is not set."""
        no_key = settlement.app_key_wait and not self._config.policy.has_app_key
        if no_key and not self._told_no_app_key:
            log.error(
                "a PATCH or DELETE waits: DD_APP_KEY is not set. They are kept (see "
                "`dora-forwarder status`) and sent once a worker runs with the key; "
                "POSTs go on."
            )
            self._told_no_app_key = True

    def _now(self) -> float:
        # Only a run's deadline uses this clock; due times and ages use Redis' clock.
        return asyncio.get_running_loop().time()

    async def aclose(self) -> None:
        """Close the sender's and the store's connections (between runs, at shutdown)."""
        await self._sender.aclose()
        await self._store.aclose()

    def request_stop(self) -> None:
        """Ask a running ``run`` to give its claims back and return; call on its loop."""
        if self._stop is not None:
            self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested during the current or last run."""
        return self._stop is not None and self._stop.is_set()

    async def run(self, budget_s: float) -> PumpReport:
        """Work for ``budget_s`` seconds, then finish what is in flight and return.

        If Redis becomes unreachable the run ends early with ``redis_error`` set; claims
        it held fall due again when their lease ends, and the next run starts afresh.
        """
        self._stop = asyncio.Event()
        report = PumpReport()
        self._window = self._window.after_run(self._peak_in_flight)
        self._peak_in_flight = 0
        try:
            if not self._group_ready:
                await self._store.ensure_group()
                self._group_ready = True
            deadline = self._now() + budget_s
            wake = asyncio.Event()
            ingest = asyncio.create_task(self._ingest(deadline, wake, report))
            try:
                await self._deliver(deadline, wake, report)
            except BaseException:
                ingest.cancel()  # delivery failed: do not keep reading until the deadline
                raise
            finally:
                if self._stop.is_set():
                    ingest.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ingest
        except REDIS_DOWN_ERRORS as exc:
            report.redis_error = f"{type(exc).__name__}: {exc}"
            log.warning("Redis is unreachable (%s); retrying on the next run", exc)
        return report

    async def _ingest(self, deadline: float, wake: asyncio.Event, report: PumpReport) -> None:
        config = self._config
        # Every page of entries dead consumers left pending, unless the run ends first;
        # the scan's place is kept, so the next run goes on from there.
        while True:
            reclaimed = await self._intake.reclaim(
                config.consumer, config.reclaim_idle_ms, config.ingest_batch
            )
            await self._fold(reclaimed, wake, report)
            if self._intake.reclaim_went_round or self._now() >= deadline or self.stopping:
                break
        await self._store.forget_idle_consumers(config.consumer, FORGET_CONSUMER_AFTER_MS)
        last_heartbeat = -HEARTBEAT_EVERY_S
        entries: list[Entry] = []
        while True:
            if self._now() - last_heartbeat >= HEARTBEAT_EVERY_S:
                await self._store.heartbeat(config.consumer, FORGET_CONSUMER_AFTER_MS)
                last_heartbeat = self._now()
            await self._fold(entries, wake, report)
            remaining_ms = int((deadline - self._now()) * 1000)
            if remaining_ms <= 0 or self.stopping:
                return
            # BLOCK 0 would wait forever: always at least 1 ms.
            block_ms = max(1, min(remaining_ms, int(HEARTBEAT_EVERY_S * 1000)))
            entries = await self._store.read(config.consumer, config.ingest_batch, block_ms)

    async def _fold(self, entries: list[Entry], wake: asyncio.Event, report: PumpReport) -> None:
        if not entries:
            return
        folded = await self._intake.fold(entries)
        report.entries += folded.entries
        report.dead_entries += len(folded.poison)
        self._observer.folded(folded.entries, len(folded.poison))
        for poison in folded.poison:
            log.error("dead letter: stream entry %s: %s", poison.entry_id, poison.reason)
        if folded.changed:
            wake.set()

    async def _deliver(self, deadline: float, wake: asyncio.Event, report: PumpReport) -> None:
        assert self._stop is not None  # noqa: S101 - set by run()
        stop = asyncio.create_task(self._stop.wait())
        flight = _Flight(token=uuid.uuid4().hex)
        try:
            while True:
                if self.stopping and flight.in_flight:
                    await self._release(flight)
                accepting = self._now() < deadline and not self.stopping
                free = self._window.size - len(flight.in_flight)
                wait_s, claimed = await self._claim_more(flight, accepting, free, report)
                if flight.in_flight:
                    await self._collect(flight, stop, report)
                    continue
                if flight.batch.settlements:
                    await self._settle(flight, report)
                if not accepting:
                    return
                if wait_s is not None:
                    # The gate's wait, but never past the run's end (a 429 may close it for
                    # minutes): the next run takes over from there.
                    until_end = max(0.0, deadline - self._now())
                    await asyncio.wait([stop], timeout=min(wait_s, IDLE_POLL_S, until_end))
                elif claimed < free:
                    await self._idle(deadline, wake, stop)
        finally:
            stop.cancel()

    async def _claim_more(
        self, flight: _Flight, accepting: bool, free: int, report: PumpReport
    ) -> tuple[float | None, int]:
        """Claim and start sending as many as the gate allows; return (gate wait, claimed).

        With requests in flight, claims wait until a quarter of the window is free, so that
        each claim round trip serves several requests.
        """
        refill_at = 1 if not flight.in_flight else max(1, self._window.size // 4)
        if not accepting or free < refill_at:
            return None, 0
        if flight.batch.settlements:
            await self._settle(flight, report)
        result = await self._store.claim(
            free,
            self._config.lease_ms,
            flight.token,
            probe_ms=self._config.probe_ms,
            ceiling_per_s=self._config.ceiling_per_s,
            breaker=self._config.breaker,
        )
        if result.gate_reopened:
            log_gate_reopened(result.gate_reopened)
        for claim in result.claims:
            decision = before_sending(claim, self._config.policy)
            if not isinstance(decision, Settlement) and probes_app_key(claim, decision):
                taken = await self._store.take_app_key_probe(flight.token, self._config.probe_ms)
                if not taken:
                    decision = wait_for_app_key_probe(claim, decision)
            if isinstance(decision, Settlement):
                flight.batch.settlements.append(log_outcome(claim, decision))
                self._observer.settled(claim, decision, None)
                self._note_app_key_wait(decision)
            else:
                sending = self._sender.send(decision)
                flight.in_flight[asyncio.create_task(sending)] = (claim, decision)
                report.sent += 1
        self._peak_in_flight = max(self._peak_in_flight, len(flight.in_flight))
        return (result.wait_ms / 1000 if result.wait_ms else None), len(result.claims)

    async def _collect(self, flight: _Flight, stop: asyncio.Task[bool], report: PumpReport) -> None:
        """Wait for at least one answer (or a stop) and turn answers into settlements."""
        done, _ = await asyncio.wait([*flight.in_flight, stop], return_when=asyncio.FIRST_COMPLETED)
        answers = []
        for task in done:
            sent = flight.in_flight.pop(cast("asyncio.Task[Attempt]", task), None)
            if sent is not None:
                claim, request = sent
                answer = cast(Attempt, task.result())
                answers.append(answer)
                settlement = from_answer(claim, request, answer, self._config.policy)
                flight.batch.settlements.append(log_outcome(claim, settlement, answer))
                self._observer.settled(claim, settlement, answer)
        flight.batch.answers.extend(answers)
        self._window = self._window.after(answers)
        refill_at = max(1, self._window.size // 4)
        if len(flight.batch.settlements) >= refill_at or not flight.in_flight:
            await self._settle(flight, report)

    async def _release(self, flight: _Flight) -> None:
        """Give claims back due now: another worker sends them (Datadog upserts by id).

        Their requests may have been written already: in doubt, so one more send follows
        once they can no longer land.
        """
        for task, (claim, _) in flight.in_flight.items():
            task.cancel()
            flight.batch.settlements.append(
                Settlement(
                    claim.incident_id,
                    claim.version,
                    Verdict.WAIT,
                    reason="released at shutdown",
                    doubt=True,
                )
            )
        await asyncio.gather(*flight.in_flight, return_exceptions=True)
        log.info("released %d claim(s) at shutdown", len(flight.in_flight))
        flight.in_flight.clear()

    async def _idle(self, deadline: float, wake: asyncio.Event, stop: asyncio.Task[bool]) -> None:
        next_due_ms = await self._store.next_due_in_ms()
        wait_s = min(IDLE_POLL_S, deadline - self._now())
        if next_due_ms is not None:
            wait_s = min(wait_s, next_due_ms / 1000)
        if wait_s > 0:
            woken = asyncio.create_task(wake.wait())
            await asyncio.wait([woken, stop], timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
        wake.clear()

    async def _settle(self, flight: _Flight, report: PumpReport) -> None:
        batch = flight.batch
        update = gate_update(
            batch.answers, auth_pause_s=self._config.policy.auth_pause_s, now_s=time.monotonic()
        )
        result = await self._store.settle(
            flight.token,
            batch.settlements,
            update,
            retention_ms=self._config.retention_ms,
            finished_retention_ms=self._config.finished_retention_ms,
            breaker_update=breaker_update(batch.answers),
            breaker=self._config.breaker,
        )
        log_breaker(result, self._config.breaker)
        if result.app_key_newly_paused:
            log.error(
                "%s: PATCH and DELETE paused for the whole fleet for %.0f s, then tried again; "
                "they are kept, and POSTs go on. Check DD_APP_KEY: an application key of the "
                "org with the dora_metrics_write permission.",
                update.app_key_detail,
                update.app_key_close_ms / 1000,
            )
        if result.gate_newly_closed:
            until = datetime.now(UTC).timestamp() + update.close_ms / 1000
            when = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds")
            if update.close_reason == REASON_AUTH:
                log.error(
                    "%s: delivery paused for the whole fleet until %s, then one request "
                    "probes the key; no event is dropped. Check DD_API_KEY and DD_SITE.",
                    update.close_detail,
                    when,
                )
            else:
                log.warning(
                    "%s: delivery paused for the whole fleet until %s", update.close_detail, when
                )
        for item in batch.settlements:
            report.outcomes[item.verdict] = report.outcomes.get(item.verdict, 0) + 1
        batch.settlements.clear()
        batch.answers.clear()
