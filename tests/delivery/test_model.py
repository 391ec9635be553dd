"""The delivery engine against a reference model: random steps, invariants after each one.

A hypothesis state machine publishes events (starts, finishes, deployments, PATCHes of
deployments, DELETEs of either, duplicates, out of order, garbage bytes), lets several
simulated workers read, fold, claim, send, settle and die, lets
a simulated Datadog answer anything (2xx, 400, 403, 429 with headers, 5xx, timeouts, late
2xx, requests applied after their timeout) and lets time pass (past leases, backoffs, the
orphan wait, the maximum age, the retention); see ``model_steps.py``. The engine is the real
one: the Lua scripts on real Redis (127.0.0.1:6379, a key prefix per example, deleted
afterwards) and the pieces ``workers/delivery/pump.py`` runs, one step at a time
(``model_engine.py``). Time is the test's own: every script takes ``now_ms``, and Redis'
expiry is emulated on that clock (each key's PEXPIRETIME is read after every step, and the
key deleted once the test's clock passes it, as Redis would). The simulated API keeps, per
id, what its POSTs and PATCHes set (a PATCH or DELETE of an id it does not hold is answered
404), and the order it applied them in; a request may land until its lease ends, never
after (the guarantee's assumption: the sender's timeout is shorter than the lease).

After every step:
- I1 no loss: every valid entry that left the stream is in its incident's stored state, and
  that state is due, in flight, delivered or dead-lettered with a reason (a state may expire
  only once delivered or dead-lettered); every garbage entry is a dead letter with a reason.
- I3 few duplicates: nothing is claimed while another claim on it is live, and no request
  of a version lands more often than the attempts in doubt and the lapsed leases explain.
- Order, as each request lands: a PATCH after the POST it follows; nothing a DELETE drops
  after that DELETE (both unless a request in doubt landed late: then the resend repairs).
Once quiet (everything answered 2xx, time past every lease, backoff and gate, the stream
drained, each request still in doubt landed as late as it could):
- I2 the API holds what each id's entries ask for (nothing after a DELETE, else the merged
  POST and PATCH), or that is a dead letter; and no two deployments in one second.

CI: ``pytest tests/delivery/test_model.py`` (bounded, under a minute). Longer, on demand:
``MODEL_EXAMPLES=2000 pytest tests/delivery/test_model.py`` (``MODEL_STEPS`` sets the steps
per example).
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from forwarder import to_event
from forwarder.entry import encode_entry
from forwarder.protocol import RedisKeys, state_id
from harness.stack import delete_keys
from tests.conftest import REDIS_URL
from tests.delivery import model_checks as checks
from tests.delivery.model import (
    PATCH,
    POST,
    STATES,
    Entry,
    Lease,
    Model,
    Request,
    patch_part,
    post_part,
    second_slots,
    state_fields,
    version_names,
)
from tests.delivery.model_engine import (
    HEADERS,
    LEASE_MS,
    POLICY,
    PROBE_MS,
    RETENTION_MS,
    Claimed,
    Engine,
    Outcome,
    Worker,
)
from tests.delivery.model_steps import (
    STEP,
    Act,
    Answer,
    Duplicate,
    Garbage,
    Land,
    Publish,
    Step,
    Wait,
    exercised,
)
from workers.delivery.gate import GateUpdate
from workers.delivery.operations import ApiRequest
from workers.delivery.settlement import before_sending

EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "0"))
"""0: the CI profile (``CI_EXAMPLES``). More runs that many (and lifts the timeout to match)."""
CI_EXAMPLES = 200
STEPS = int(os.environ.get("MODEL_STEPS", "60"))
WORKERS = 3
T0_MS = 1_750_000_000_000
"""The test's clock starts here (the scripts never read Redis' own clock)."""
DRAIN_ROUNDS = 400
QUIET_EVERY = 20
"""Steps between two quiet periods chosen at random (every example ends with one)."""

P = ParamSpec("P")
R = TypeVar("R")


def guarded(method: Callable[P, R]) -> Callable[P, R]:
    """Mark the machine broken when a step fails, so that teardown does not drain it."""

    @functools.wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except BaseException:
            args[0].broken = True  # type: ignore[attr-defined]
            raise

    return run


class DeliveryModel(RuleBasedStateMachine):
    """Publishers, workers, Datadog and time, driven at random against the real engine."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.loop = asyncio.new_event_loop()
        self.keys = RedisKeys(f"model-{uuid.uuid4().hex[:12]}")
        self.client = aioredis.Redis.from_url(REDIS_URL)
        self.engine = Engine(self.client, self.keys)
        self.watched = (
            self.engine.watched(STATES)
            + [self.keys.second_prefix + slot for slot in second_slots()]
            + [self.keys.version_prefix + name for name in version_names()]
        )
        self.model = Model()
        self.now_ms = T0_MS
        self.workers = [self.engine.worker(slot) for slot in range(WORKERS)]
        self.since_quiet = 0
        self.run(self.engine.store.ensure_group())

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            if not self.broken:
                self.quiesce()
                unwatched = self.run(self.engine.unwatched_expiring(self.watched))
                assert not unwatched, f"keys whose expiry the test does not emulate: {unwatched}"
        finally:
            self.run(self.engine.sender.aclose())
            self.run(self.client.aclose())
            self.loop.close()
            delete_keys(REDIS_URL, "{" + self.keys.prefix + "}*")

    # --- the rules -----------------------------------------------------------------------

    @initialize(limits_known=st.sampled_from([True, True, True, False]))
    @guarded
    def gate(self, limits_known: bool) -> None:
        """The fleet starts knowing nothing of the API's limits (one probe at a time), or
        knowing it announces none (as after any 2xx without rate-limit headers)."""
        if limits_known:
            update = GateUpdate(unlimited=True, answered=True)
            token = self.workers[0].token
            self.run(self.engine.store.settle(token, [], update, now_ms=self.now_ms))

    @rule(step=STEP)
    @guarded
    def act(self, step: Step) -> None:
        """One step of a publisher, a worker, the API or the clock."""
        in_flight = any(w.in_flight for w in self.workers)
        event(f"{type(step).__name__} with requests in flight: {in_flight}")
        match step:
            case Publish(data, kind):
                self.publish(data, kind)
            case Duplicate(pick) if self.model.valid():
                valid = self.model.valid()
                original = valid[pick % len(valid)]
                assert original.data is not None
                assert original.kind is not None
                self.publish(dict(original.data), original.kind)
            case Garbage(fields):
                self.model.entries.append(Entry(self.xadd(fields), None))
            case Act(action, pick):
                self.worker_acts(self.workers[pick % WORKERS], action)
            case Answer(pick, outcome, headers, jitter):
                pairs = [(w, rid) for w in self.workers for rid in w.in_flight]
                if pairs:
                    worker, rid = pairs[pick % len(pairs)]
                    self.answer(worker, rid, outcome, headers, jitter)
            case Land(pick):
                landable = [r for r in self.model.requests if r.may_land(self.now_ms)]
                if landable:
                    self.model.land(landable[pick % len(landable)])
            case Wait(ms, late_requests_land):
                if not exercised("expiry"):
                    # Until then, nothing reaches its retention: a due state would expire.
                    ms = min(ms, max(0, T0_MS + RETENTION_MS // 2 - self.now_ms))
                self.advance_to(self.now_ms + ms, late_requests_land=late_requests_land)

    @precondition(lambda self: self.since_quiet >= QUIET_EVERY)
    @rule()
    @guarded
    def quiet(self) -> None:
        """Everything answers 2xx until nothing is left to do; then I2 must hold."""
        self.quiesce()
        self.since_quiet = 0

    # --- publishers, workers, the API, the clock -----------------------------------------

    def xadd(self, fields: dict[bytes, bytes]) -> str:
        entry_id: bytes = self.run(
            self.client.xadd(self.keys.ingest, fields)  # type: ignore[arg-type]
        )
        return entry_id.decode()

    def publish(self, data: dict[str, Any], kind: str) -> None:
        """XADD ``data`` of ``kind`` as every producer encodes it."""
        event = to_event(data, kind)
        entry = encode_entry(event)
        entry_id = self.xadd({str(k).encode(): str(v).encode() for k, v in entry.items()})
        fields = state_fields(data, kind, entry_id)
        state = state_id(kind, event.event_id)
        self.model.entries.append(Entry(entry_id, state, kind, data, fields))

    def worker_acts(self, worker: Worker, action: str) -> None:
        if action in {"read", "ingest", "turn"}:
            self.run(self.engine.read(worker))
        if action == "reclaim":
            self.run(self.engine.reclaim(worker))
        if action in {"fold", "ingest", "reclaim", "turn"}:
            self.run(self.engine.fold(worker, self.now_ms))
        if action == "settle" and worker.settlements:
            self.settle(worker)
        if action in {"claim", "turn"} and self.ready(worker):
            self.claim(worker)
        if action == "die":
            # SIGKILL, and a new process in its place: what the dead one read stays pending,
            # its requests may still land, its answers and unsettled outcomes are lost.
            if worker.in_flight:
                event("a worker died with requests in flight")
            worker.restart(self.engine.intake())

    def ready(self, worker: Worker) -> bool:
        """Whether ``worker`` may claim: a worker whose requests outlived their lease was
        paused, and on resuming collects their answers before it claims, as the pump does."""
        return all(self.request(rid).lease_end_ms > self.now_ms for rid in worker.in_flight)

    def claim(self, worker: Worker) -> Claimed:
        """Claim as the pump does."""
        if worker.settlements:
            self.settle(worker)
        claimed = self.run(self.engine.claim(worker, self.now_ms))
        for claim in claimed.claims:
            live = self.model.live_leases(claim.incident_id, self.now_ms)
            assert not live, f"I3: {claim.incident_id} claimed while a claim on it is live: {live}"
            self.model.leases.append(Lease(claim.incident_id, worker.token, self.now_ms + LEASE_MS))
        for claim in claimed.to_send:
            sent = before_sending(claim, POLICY)  # pure: the request the worker sends
            assert isinstance(sent, ApiRequest)
            body = {POST: post_part, PATCH: patch_part}.get(sent.step, lambda _: None)
            request = Request(
                rid=len(self.model.requests) + 1,
                token=worker.token,
                incident=claim.incident_id,
                epoch=self.model.epoch.get(claim.incident_id, 0),
                version=claim.version,
                step=str(sent.step),
                body=body(claim.attributes),
                claimed=claim.attributes,
                lease_end_ms=self.now_ms + LEASE_MS,
            )
            self.model.requests.append(request)
            worker.in_flight[request.rid] = claim
        return claimed

    def request(self, rid: int) -> Request:
        return self.model.requests[rid - 1]

    def answer(
        self, worker: Worker, rid: int, outcome: Outcome, headers: str, jitter: float
    ) -> None:
        """The API answers request ``rid`` (a 2xx lands it if it has not landed yet; a PATCH
        or DELETE of an id the API does not hold is answered 404 instead)."""
        request = self.request(rid)
        if request.landed and not outcome.applies and outcome is not Outcome.TIMEOUT:
            outcome = Outcome.ACCEPTED  # an applied request is not refused afterwards
        if outcome.applies and not request.landed:
            if request.may_land(self.now_ms):
                self.model.land(request)
            else:
                outcome = Outcome.TIMEOUT  # it can no longer land, so no 2xx can come
        if outcome is Outcome.TIMEOUT:
            self.model.count(self.model.doubts, request.incident)
            if not exercised("late"):
                request.never_lands = not request.landed
        elif not outcome.applies:
            request.never_lands = True
        late = " after its lease" if request.lease_end_ms <= self.now_ms else ""
        status = request.status if outcome.applies else None
        event(f"answer to {request.step.upper()}: {status or outcome.name}{late}")
        self.run(
            self.engine.answer(
                worker,
                rid,
                outcome,
                HEADERS[headers],
                jitter,
                status=status,
                check=functools.partial(checks.as_sent, request),
            )
        )

    def settle(self, worker: Worker) -> None:
        for incident in self.run(self.engine.settle(worker, self.now_ms)):
            self.model.settled(incident, worker.token)

    def advance_to(self, target_ms: int, *, late_requests_land: bool) -> None:
        """Time passes: requests in doubt whose lease ends meanwhile land (as late as they
        can) or never will; leases lapse; keys expire (only a quiet state may)."""
        ending = [r for r in self.model.requests if r.open and r.lease_end_ms <= target_ms]
        for request in sorted(ending, key=lambda r: r.lease_end_ms):
            if late_requests_land and request.may_land(request.lease_end_ms - 1):
                event("a request landed at the end of its lease")
                self.model.land(request)
            request.never_lands = not request.landed
        self.model.lapse(target_ms)
        if exercised("expiry"):
            # What the last engine step set (or PERSISTed) counts from before the jump.
            self.run(self.engine.track_expiry(self.now_ms, self.watched))
            if self.engine.expiring(target_ms):
                self.catch_up()
            for name in self.engine.expiring(target_ms):
                self.expire(name)
        self.now_ms = target_ms

    def catch_up(self) -> None:
        """Before a jump past a retention: what was read is folded, what is pending reclaimed
        and folded, as a fleet that ran meanwhile would have (each pump run begins with a
        reclaim). Entries left pending for a whole retention with no worker running could
        otherwise re-create an expired state from data older than what was delivered."""
        for worker in self.workers:
            self.run(self.engine.fold(worker, self.now_ms))
        while True:
            self.run(self.engine.reclaim(self.workers[0]))
            if not self.workers[0].buffer:
                break
            self.run(self.engine.fold(self.workers[0], self.now_ms))
        self.note_folded()
        self.run(self.engine.track_expiry(self.now_ms, self.watched))

    def expire(self, name: str) -> None:
        """Delete ``name`` as Redis would; an incident's state must be quiet by then (I1)."""
        incident = name.removeprefix(self.keys.incident_prefix)
        if incident in STATES:
            snap = self.run(self.engine.snapshot((incident,)))
            is_dead = checks.quiet_when_expiring(snap, incident)
            event("a quiet state expired")
            self.model.expire(incident, snap.attributes(incident), dead=is_dead)
        if name.startswith(self.keys.second_prefix):
            event("the holder of a second was forgotten")
            self.model.forgotten_seconds.add(name.removeprefix(self.keys.second_prefix))
        self.run(self.engine.expire(name))

    # --- quiet, and I2 -------------------------------------------------------------------

    def quiesce(self) -> None:
        """Answer what is in flight, then drain: ingest, claim, answer 2xx, and move the
        clock to the next due time (or the gate's reopening) until nothing is left."""
        for worker in self.workers:
            for rid in list(worker.in_flight):
                request = self.request(rid)
                landable = request.landed or request.may_land(self.now_ms)
                outcome = Outcome.ACCEPTED if landable else Outcome.TIMEOUT
                self.answer(worker, rid, outcome, "none", 0.5)
            if worker.settlements:
                self.settle(worker)
        worker = self.workers[0]
        for _ in range(DRAIN_ROUNDS):
            while True:
                self.run(self.engine.reclaim(worker))
                self.run(self.engine.read(worker))
                if not worker.buffer:
                    break
                self.run(self.engine.fold(worker, self.now_ms))
            self.note_folded()
            claimed = self.claim(worker)
            for rid in list(worker.in_flight):
                self.answer(worker, rid, Outcome.ACCEPTED, "none", 0.5)
            if worker.settlements:
                self.settle(worker)
            if claimed.claims:
                continue
            if claimed.gate_reason == "probe":
                # I8: a probe holds the fleet back only while its claim may still be settled:
                # here, every live worker has settled, so it must be a dead one's.
                assert any(
                    not lease.settled and lease.end_ms - LEASE_MS + PROBE_MS > self.now_ms
                    for lease in self.model.leases
                ), "I8: the fleet waits for a probe whose claim was settled without a request"
            wait_ms = claimed.wait_ms
            times = [self.now_ms + wait_ms] if wait_ms else self.due_times()
            if not times:
                assert self.run(self.engine.stream_length()) == 0, "entries left unfolded"
                self.check_newest_landed()
                return
            self.advance_to(max(self.now_ms + 1, min(times)), late_requests_land=True)
        raise AssertionError(f"not quiet after {DRAIN_ROUNDS} rounds of answering 2xx")

    def due_times(self) -> list[int]:
        """When the engine next has something to do: a due time, a lease's end, a landing."""
        times = [r.lease_end_ms for r in self.model.requests if r.may_land(self.now_ms)]
        next_due = self.run(self.engine.next_due_ms())
        return times if next_due is None else [*times, next_due]

    def check_newest_landed(self) -> None:
        """I2 (see ``model_checks.newest_landed``)."""
        snap = self.run(self.engine.snapshot(STATES))
        for case in checks.newest_landed(self.model, snap):
            event(case)
        checks.one_per_second(self.model, snap)
        # Every request has landed or never will, and I2 holds: whatever a late one did to
        # the order at the API is repaired.
        self.model.disturbed.clear()

    # --- invariants after every step -----------------------------------------------------

    def note_folded(self, stream: set[str] | None = None) -> None:
        """Entries gone from the stream (``stream``: its ids, read now if not given) were
        folded, into the state's current epoch."""
        if stream is None:
            stream = self.run(self.engine.snapshot(())).stream_ids
        for entry in self.model.entries:
            if entry.folded_in is None and entry.entry_id not in stream:
                entry.folded_in = self.model.epoch.get(entry.incident or "", 0)

    @invariant()
    @guarded
    def nothing_is_lost(self) -> None:
        """I1 (and note each key's expiry for the next step)."""
        self.since_quiet += 1
        self.run(self.engine.track_expiry(self.now_ms, self.watched))
        snap = self.run(self.engine.snapshot(STATES))
        self.note_folded(snap.stream_ids)
        checks.nothing_is_lost(self.model, snap)
        checks.same_second_named(snap)

    @invariant()
    @guarded
    def duplicates_are_bounded(self) -> None:
        """I3 (see ``model_checks.duplicates_are_bounded``)."""
        checks.duplicates_are_bounded(self.model)


# A failing run shrinks its example for up to five minutes (hypothesis stops there).
@pytest.mark.timeout(600 + EXAMPLES // 2)
def test_engine_holds_the_invariants_against_the_model() -> None:
    """Random publishes, failures and time: nothing lost, newest state last, few duplicates."""
    run_state_machine_as_test(
        DeliveryModel,
        settings=settings(
            max_examples=EXAMPLES or CI_EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
