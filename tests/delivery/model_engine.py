"""The model test's engine: the real pieces a pump runs, one step at a time, on a test clock.

Each worker does what ``workers/delivery/pump.py`` does, in the same order and with the same
pieces (``Store`` and its Lua scripts on real Redis, ``Intake``, ``before_sending``,
``DatadogSender``, ``from_answer``, ``log_outcome``, ``gate_update``, ``breaker_update``,
``Window``), but split into steps the test interleaves: read, fold, claim, answer, settle.
The scripts take the test's clock (``now_ms``). Redis expires keys on its own clock, so
expiry is emulated: after every step the test reads each key's ``PEXPIRETIME`` and, when its
clock passes that moment (counted from when the expiry was set), deletes the key as Redis
would have.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as aioredis
from pydantic import SecretStr

from forwarder.protocol import GateField, RedisKeys
from workers.delivery.backoff import BackoffPolicy
from workers.delivery.breaker import BreakerPolicy, breaker_update
from workers.delivery.gate import gate_update
from workers.delivery.intake import Intake
from workers.delivery.operations import ApiRequest
from workers.delivery.outcome_log import log_outcome
from workers.delivery.records import Attempt, Claim, Settlement
from workers.delivery.sender import DatadogSender
from workers.delivery.settlement import SettlementPolicy, before_sending, from_answer
from workers.delivery.store import DEFAULT_FINISHED_RETENTION_MS, Store
from workers.delivery.window import Window

LEASE_MS = 30_000
RETENTION_MS = 3_600_000
ORPHAN_WAIT_MS = 600_000
MAX_AGE_MS = 1_800_000
FINISHED_RETENTION_MS = DEFAULT_FINISHED_RETENTION_MS
PROBE_MS = 11_000
MAX_IN_FLIGHT = 8
INGEST_BATCH = 5
BREAKER = BreakerPolicy(failures=4, probe_ms=1_000, probe_max_ms=30_000)
POLICY = SettlementPolicy(
    backoff=BackoffPolicy(base_s=1.0, max_s=60.0),
    orphan_wait_ms=ORPHAN_WAIT_MS,
    max_age_ms=MAX_AGE_MS,
    auth_pause_s=60.0,
    patch_wait_ms=120_000,
)
"""A PATCH answered 404 is retried for 2 minutes (longer than a lease, so that a resend after
a late DELETE comes first): a few rounds of the drain, not the hour's sixty."""
API_KEY = "model-test-key-0123456789abcdef"
APP_KEY = "model-test-app-key-0123456789abcdef"

Entry = tuple[bytes, dict[bytes, bytes]]


class Outcome(enum.Enum):
    """What the simulated API does with a request, as the worker sees it."""

    ACCEPTED = 202
    REJECTED = 400
    FORBIDDEN = 403
    RATE_LIMITED = 429
    SERVER_ERROR = 503
    NOT_IMPLEMENTED = 501
    TIMEOUT = "timeout"
    """No answer in time: the request may have landed, or may still land."""
    NOT_SENT = "connect"
    """The connection failed before the request was written: it cannot land."""

    @property
    def applies(self) -> bool:
        """Whether the API applied the request when it answered so."""
        return self is Outcome.ACCEPTED


HEADERS: dict[str, dict[str, str]] = {
    "none": {},
    "budget": {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "30",
        "X-RateLimit-Reset": "20",
        "X-RateLimit-Period": "60",
    },
    "spent": {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "7, 7",
        "X-RateLimit-Period": "60",
    },
    "words": {"X-RateLimit-Reset": "soon", "X-RateLimit-Limit": "-5", "X-RateLimit-Period": "nan"},
    "huge": {
        "X-RateLimit-Limit": "1e17",
        "X-RateLimit-Remaining": "1e17",
        "X-RateLimit-Reset": "1e17",
        "X-RateLimit-Period": "1e17",
    },
}
"""Rate-limit headers an answer may carry: sane, spent, unreadable and absurd."""


@dataclass(slots=True)
class Worker:
    """One simulated worker process: a consumer name, the token of its run, what it holds."""

    slot: int
    intake: Intake
    generation: int = 0
    window: Window = field(default_factory=lambda: Window.start(MAX_IN_FLIGHT))
    """How many requests it may have in flight (the pump's slow start)."""
    buffer: list[Entry] = field(default_factory=list)
    """Entries read from the stream and not yet folded (pending in the group)."""
    in_flight: dict[int, Claim] = field(default_factory=dict)
    """Requests sent and not yet answered, by request id."""
    settlements: list[Settlement] = field(default_factory=list)
    answers: list[Attempt] = field(default_factory=list)

    @property
    def consumer(self) -> str:
        """The consumer name of this process (a restarted process reads under a new one)."""
        return f"model-worker-{self.slot}-{self.generation}"

    @property
    def token(self) -> str:
        """The token its claims carry (one per pump run; one run per process here)."""
        return f"token-{self.slot}-{self.generation}"

    def restart(self, intake: Intake) -> None:
        """A new process in this slot: new name, new token, nothing held."""
        self.generation += 1
        self.intake = intake
        self.window = Window.start(MAX_IN_FLIGHT)
        self.buffer.clear()
        self.in_flight.clear()
        self.settlements.clear()
        self.answers.clear()


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a claim got: every claim, those to send (the others are settled before sending,
    in the batch), and how long the gate says to wait (ms; 0: it let claims through) and why."""

    claims: list[Claim]
    to_send: list[Claim]
    wait_ms: int
    gate_reason: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The engine's state as Redis holds it, for the invariants."""

    states: dict[str, dict[str, str]]
    due: dict[str, float]
    inflight: dict[str, float]
    stream_ids: set[str]
    letters: list[dict[str, str]]

    def attributes(self, incident: str) -> dict[str, Any]:
        """The merged attributes stored for ``incident`` (decoded from its ``a:`` fields)."""
        state = self.states.get(incident, {})
        return {k[2:]: json.loads(v) for k, v in state.items() if k.startswith("a:")}

    def number(self, incident: str, name: str) -> int:
        """An integer field of the incident's hash (0 when absent)."""
        return int(self.states.get(incident, {}).get(name, 0))


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


class Engine:
    """The real pieces on real Redis under one key prefix, driven step by step."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys
        self.store = Store(client, keys)
        self._answer: Callable[[httpx.Request], httpx.Response] = lambda _: httpx.Response(202)
        self.sender = DatadogSender(
            base_url="https://api.example.test",
            api_key=SecretStr(API_KEY),
            app_key=SecretStr(APP_KEY),
            timeout_s=5.0,
            transport=httpx.MockTransport(self._handle),
        )
        self._expiry: dict[str, tuple[int, int]] = {}
        """Key -> (its PEXPIRETIME on Redis' clock, when it expires on the test's clock)."""

    def _handle(self, request: httpx.Request) -> httpx.Response:
        return self._answer(request)

    def intake(self) -> Intake:
        """What a new process folds through (it keeps its own place in the reclaim scan)."""
        return Intake(self.store, retention_ms=RETENTION_MS, orphan_wait_ms=ORPHAN_WAIT_MS)

    def worker(self, slot: int) -> Worker:
        """A new worker process in ``slot``."""
        return Worker(slot, self.intake())

    # --- ingest --------------------------------------------------------------------------

    async def read(self, worker: Worker) -> None:
        """XREADGROUP a batch into the worker's memory (pending until folded)."""
        worker.buffer.extend(await self.store.read(worker.consumer, INGEST_BATCH, None))

    async def reclaim(self, worker: Worker) -> None:
        """Take over what other consumers read and never acknowledged.

        XAUTOCLAIM measures idleness on Redis' clock, which the test does not move: it
        takes everything pending (as it would once ``reclaim_idle_ms`` passed), so a live
        but slow worker's entries may be folded twice, which folding must make harmless.
        """
        worker.buffer.extend(await worker.intake.reclaim(worker.consumer, 0, INGEST_BATCH))

    async def fold(self, worker: Worker, now_ms: int) -> None:
        """Fold what the worker holds, as the pump does after each read."""
        entries, worker.buffer = worker.buffer, []
        if entries:
            await worker.intake.fold(entries, now_ms=now_ms)

    # --- delivery ------------------------------------------------------------------------

    async def claim(self, worker: Worker, now_ms: int) -> Claimed:
        """Claim what the free slots and the gate allow (the pump settles its batch first).

        A probe in progress makes the wait last until the probe's end, where the pump would
        poll every 100 ms.
        """
        assert not worker.settlements, "the pump settles its batch before it claims"
        free = worker.window.size - len(worker.in_flight)
        if free <= 0:
            return Claimed([], [], 0, "")
        result = await self.store.claim(
            free, LEASE_MS, worker.token, probe_ms=PROBE_MS, now_ms=now_ms, breaker=BREAKER
        )
        wait_ms = result.wait_ms
        if result.gate_reason == "probe":
            probe_until = await self.client.hget(self.keys.gate, GateField.PROBE_UNTIL_MS)
            wait_ms = max(wait_ms, int(probe_until or 0) - now_ms)
        to_send = []
        for claim in result.claims:
            early = before_sending(claim, POLICY)
            if isinstance(early, Settlement):
                worker.settlements.append(log_outcome(claim, early))
            else:
                to_send.append(claim)
        return Claimed(result.claims, to_send, wait_ms, result.gate_reason)

    async def answer(
        self,
        worker: Worker,
        rid: int,
        outcome: Outcome,
        headers: Mapping[str, str],
        jitter: float,
        *,
        status: int | None = None,
        check: Callable[[httpx.Request], None] = lambda _: None,
    ) -> Attempt:
        """Send request ``rid`` through the real sender; the API answers ``outcome`` (with
        ``status`` instead of 202 when given: what the API answered when it processed the
        request, a 404 for a PATCH or DELETE of an id it does not hold). ``check`` asserts
        what reached the API is the request the test expects."""
        claim = worker.in_flight.pop(rid)

        def answer(request: httpx.Request) -> httpx.Response:
            check(request)
            if outcome is Outcome.TIMEOUT:
                raise httpx.ReadTimeout("the API held the request", request=request)
            if outcome is Outcome.NOT_SENT:
                raise httpx.ConnectError("connection refused", request=request)
            assert isinstance(outcome.value, int)
            code = status if outcome.applies and status is not None else outcome.value
            body: Any = {"errors": [f"status {code}"]} if code >= 300 else {"data": None}
            return httpx.Response(code, headers=dict(headers), json=body)

        self._answer = answer
        request = before_sending(claim, POLICY)  # pure: the request the claim was sent with
        assert isinstance(request, ApiRequest)
        attempt = await self.sender.send(request)
        settlement = from_answer(claim, request, attempt, POLICY, uniform=lambda: jitter)
        worker.answers.append(attempt)
        worker.settlements.append(log_outcome(claim, settlement, attempt))
        worker.window = worker.window.after([attempt])
        return attempt

    async def settle(self, worker: Worker, now_ms: int) -> list[str]:
        """Record the worker's batch and its gate update; return the incidents settled."""
        update = gate_update(worker.answers, auth_pause_s=POLICY.auth_pause_s)
        settled = [s.incident_id for s in worker.settlements]
        await self.store.settle(
            worker.token,
            worker.settlements,
            update,
            now_ms=now_ms,
            retention_ms=RETENTION_MS,
            finished_retention_ms=FINISHED_RETENTION_MS,
            breaker_update=breaker_update(worker.answers),
            breaker=BREAKER,
        )
        worker.settlements.clear()
        worker.answers.clear()
        return settled

    # --- what Redis holds ----------------------------------------------------------------

    async def snapshot(self, incidents: tuple[str, ...]) -> Snapshot:
        """Everything the invariants look at, read in one pipeline."""
        pipe = self.client.pipeline(transaction=True)
        for incident in incidents:
            pipe.hgetall(self.keys.incident(incident))
        pipe.zrange(self.keys.due, 0, -1, withscores=True)
        pipe.zrange(self.keys.inflight, 0, -1, withscores=True)
        pipe.xrange(self.keys.ingest)
        pipe.xrange(self.keys.dead)
        *hashes, due, inflight, stream, dead = await pipe.execute()
        return Snapshot(
            states={
                incident: {_text(k): _text(v) for k, v in raw.items()}
                for incident, raw in zip(incidents, hashes, strict=True)
            },
            due={_text(k): score for k, score in due},
            inflight={_text(k): score for k, score in inflight},
            stream_ids={_text(eid) for eid, _ in stream},
            letters=[{_text(k): _text(v) for k, v in fields.items()} for _, fields in dead],
        )

    async def next_due_ms(self) -> int | None:
        """The earliest due time or lease end, on the test's clock (None: nothing pending)."""
        times = []
        for key in (self.keys.due, self.keys.inflight):
            first = await self.client.zrange(key, 0, 0, withscores=True)
            if first:
                times.append(int(first[0][1]))
        return min(times) if times else None

    async def stream_length(self) -> int:
        """Entries not yet folded (read or not)."""
        return int(await self.client.xlen(self.keys.ingest))

    # --- expiry on the test's clock ------------------------------------------------------

    def watched(self, incidents: tuple[str, ...]) -> list[str]:
        """Every key the engine may write for ``incidents``: each ``RedisKeys`` name, and
        each per-id name (``incident(id)``, and any other) for each incident."""
        names = []
        for attr in dir(RedisKeys):
            member = getattr(RedisKeys, attr)
            if attr.startswith("_"):
                continue
            if isinstance(member, property):
                value = getattr(self.keys, attr)
                if isinstance(value, str):
                    names.append(value)
            elif callable(member):
                names.extend(getattr(self.keys, attr)(incident) for incident in incidents)
        return names

    async def track_expiry(self, now_ms: int, names: list[str]) -> None:
        """Note when each of ``names`` expires, on the test's clock.

        A key whose PEXPIRETIME changed since the last look had its expiry set during the
        last step: it expires that long after the test's ``now_ms``.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.time()
        for name in names:
            pipe.pexpiretime(name)
        (seconds, micros), *deadlines = await pipe.execute()
        redis_ms = int(seconds) * 1000 + int(micros) // 1000
        for name, at_ms in zip(names, deadlines, strict=True):
            if at_ms < 0:
                self._expiry.pop(name, None)
            elif self._expiry.get(name, (None, 0))[0] != at_ms:
                self._expiry[name] = (at_ms, now_ms + (at_ms - redis_ms))

    async def unwatched_expiring(self, names: list[str]) -> list[str]:
        """Keys under the prefix that have an expiry and are not in ``names`` (should be none:
        the emulation would miss them)."""
        found = []
        async for raw in self.client.scan_iter(match="{" + self.keys.prefix + "}*", count=1000):
            name = _text(raw)
            if name not in names and await self.client.pexpiretime(name) >= 0:
                found.append(name)
        return found

    def expiring(self, now_ms: int) -> list[str]:
        """Keys whose expiry on the test's clock is at or before ``now_ms``, soonest first."""
        due = [(at, name) for name, (_, at) in self._expiry.items() if at <= now_ms]
        return [name for _, name in sorted(due)]

    async def expire(self, name: str) -> None:
        """Delete ``name`` as Redis would have when its time came."""
        await self.client.delete(name)
        self._expiry.pop(name, None)
