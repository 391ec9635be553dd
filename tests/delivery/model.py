"""The model test's reference: what was published, what Datadog holds, which requests are out.

Pure Python, no Redis: ``test_model.py`` drives the real engine and this model side by side,
and compares them. The model knows nothing of versions, due sets or leases beyond what it
needs to judge the engine from outside: the merged state every valid event adds up to, what
the simulated API holds per id (and the order it applied requests in), and how often each
request of each version landed.

Ids are state ids (``forwarder.protocol.state_id``): an incident's id, or
``deployment/<id>``. A state's fields are named as the engine stores them: the POST's
attributes, ``patch.<attribute>`` for a PATCH's, ``delete`` for a DELETE (its stream
position). The API holds, per id, the POST's attributes and the PATCH's (``patch.*``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from forwarder import to_event
from forwarder.protocol import (
    DELETE_FIELD,
    KIND_DEPLOYMENT,
    KIND_FAILURE,
    PATCH_FIELD_PREFIX,
    state_id,
)
from workers.delivery.fold import stream_position

BASE_S = 1_700_000_000
"""Incidents' timestamps are offsets from this (seconds)."""
INCIDENTS = tuple(f"model-incident-{n:04d}" for n in range(3))
START_OFFSETS_S = (0, 60, 0, 60, 2_000)
"""2000 s is after every finish: a merged state that breaks Datadog's rule (a dead letter)."""
FINISH_OFFSETS_S = (600, 1_200)
SERVICES = (("checkout",), ("checkout", "payments"))
ENVS = ("prod", "staging")
DEPLOYMENT_IDS = ("model-deploy-0000", "model-deploy-0001")
CLASH_ID = "model-deploy-clash0"
"""A deployment that always starts in the second of the first one's first start: whichever
of the two is folded second while the other holds that second is dead-lettered, naming both
(Datadog keeps one deployment per service, env and second)."""
DEPLOYMENTS = tuple(state_id(KIND_DEPLOYMENT, d) for d in (*DEPLOYMENT_IDS, CLASH_ID))
"""The deployments' state ids."""
STATES = INCIDENTS + DEPLOYMENTS
"""Every state id the test publishes to."""
DEPLOYMENT_SERVICE, DEPLOYMENT_ENV = "checkout", "prod"
DEPLOYMENT_START_OFFSETS_S = (0, 60)
"""Added to each deployment's own base (``deployment_base_s``): no two ids ever start in the
same second (but ``CLASH_ID``), so Datadog's one-deployment-per-service-and-second rule
bites only where the test means it to."""
DEPLOYMENT_DURATIONS_S = (90,)
"""One: fewer distinct POSTs, so that one is often published again unchanged (after its
DELETE, say), where the engine must not take it for what Datadog already holds."""
DEPLOYMENT_VERSIONS = ("v1", "v2")
"""Always one: like every start, every deployment carries the same fields, so that any one
rebuilds the POST (a field only older entries named is forgotten once a state expires)."""
REMEDIATIONS: tuple[dict[str, str] | None, ...] = (
    None,
    {"id": DEPLOYMENT_IDS[1], "type": "rollback"},
    {"version": "v2", "type": "rollforward"},
)

Attributes = dict[str, Any]
ACCEPTED, NOT_FOUND = 202, 404
POST, PATCH, DELETE = "post", "patch", "delete"


def start_event(incident: str, offset_s: int, services: tuple[str, ...], env: str) -> Attributes:
    """A start; every start carries the same fields, so any one of them rebuilds a state."""
    return {
        "id": incident,
        "started_at": BASE_S + offset_s,
        "services": list(services),
        "env": env,
    }


def finish_event(incident: str, offset_s: int) -> Attributes:
    """A finish that names only its incident: the worker completes it from the stored start."""
    return {"id": incident, "finished_at": BASE_S + offset_s}


def deployment_base_s(deployment: str) -> int:
    """Where deployment ``deployment``'s start times begin (seconds): apart for each id, but
    ``CLASH_ID`` shares the first one's."""
    if deployment == CLASH_ID:
        deployment = DEPLOYMENT_IDS[0]
    return BASE_S + 100_000 * (DEPLOYMENT_IDS.index(deployment) + 1)


def deployment_event(deployment: str, offset_s: int, duration_s: int, version: str) -> Attributes:
    """A deployment's POST; every one carries the same fields, so any one rebuilds it."""
    started = deployment_base_s(deployment) + offset_s
    return {
        "id": deployment,
        "service": DEPLOYMENT_SERVICE,
        "env": DEPLOYMENT_ENV,
        "version": version,
        "started_at": started,
        "finished_at": started + duration_s,
    }


def patch_event(
    deployment: str, change_failure: bool, remediation: dict[str, str] | None
) -> Attributes:
    """A PATCH by id: the deployment failed (or not), and how it was remedied, if given."""
    data: Attributes = {"id": deployment, "change_failure": change_failure}
    if remediation is not None:
        data["remediation"] = remediation
    return data


def deletion(event_id: str) -> Attributes:
    """A DELETE of a deployment or an incident (the kind says which)."""
    return {"id": event_id}


def second_slot(service: str, env: str | None, started_at_ns: int) -> str:
    """The ``<service> <env> <second>`` a deployment takes at Datadog, in fold.lua's form (the
    stored JSON of service and env, the start's whole seconds)."""
    return f"{json.dumps(service)} {json.dumps(env)} {started_at_ns // 1_000_000_000}"


def second_slots() -> list[str]:
    """Every second a deployment of the test may hold."""
    return [
        second_slot(
            DEPLOYMENT_SERVICE, DEPLOYMENT_ENV, (deployment_base_s(deployment) + offset) * 10**9
        )
        for deployment in DEPLOYMENT_IDS
        for offset in DEPLOYMENT_START_OFFSETS_S
    ]


def version_names() -> list[str]:
    """Every ``<service> <env> <version>`` a deployment of the test may name (fold.lua's
    index for PATCH by version)."""
    return [
        " ".join(json.dumps(value) for value in (DEPLOYMENT_SERVICE, DEPLOYMENT_ENV, version))
        for version in DEPLOYMENT_VERSIONS
    ]


def normalised(data: Attributes, kind: str = KIND_FAILURE) -> Attributes:
    """The state fields the engine stores for ``data`` (timestamps in ns, with id; a PATCH's
    as ``patch.*``; a DELETE's mark is set to its position by ``state_fields``)."""
    attributes: Attributes = json.loads(json.dumps(to_event(data, kind).attributes()))
    return attributes


def state_fields(data: Attributes, kind: str, entry_id: str) -> Attributes:
    """The state fields the entry ``entry_id`` holding ``data`` of ``kind`` writes."""
    fields = normalised(data, kind)
    if DELETE_FIELD in fields:
        fields[DELETE_FIELD] = stream_position(entry_id)
    return fields


def post_part(fields: Attributes) -> Attributes:
    """The POST's attributes among a state's fields."""
    return {
        k: v
        for k, v in fields.items()
        if k != DELETE_FIELD and not k.startswith(PATCH_FIELD_PREFIX)
    }


def patch_part(fields: Attributes) -> Attributes:
    """The PATCH's attributes among a state's fields, without their prefix."""
    return {
        k[len(PATCH_FIELD_PREFIX) :]: v
        for k, v in fields.items()
        if k.startswith(PATCH_FIELD_PREFIX)
    }


def prefixed(patch: Attributes) -> Attributes:
    """PATCH attributes as the API's holding (and a state) names them."""
    return {PATCH_FIELD_PREFIX + k: v for k, v in patch.items()}


def at_api(fields: Attributes) -> Attributes | None:
    """What Datadog holds once every request a state's ``fields`` ask for landed, in order:
    nothing when they ask for no POST and no PATCH (deleted, or never posted); else the
    POST's attributes and the PATCH's (``patch.*``). PATCH attributes alone are what no API
    can hold (it answers 404 to a PATCH of a deployment it does not hold): only a dead
    letter explains them."""
    post, patch = post_part(fields), patch_part(fields)
    if not post and not patch:
        return None
    return {**post, **prefixed(patch)}


@dataclass(slots=True)
class Entry:
    """One stream entry the test wrote: valid (its state id, kind, data and the state fields
    it writes) or garbage."""

    entry_id: str
    incident: str | None
    """The state id it is folded into; None: garbage, to end as a dead letter."""
    kind: str | None = None
    data: Attributes | None = None
    """What was published (a duplicate publishes it again)."""
    fields: Attributes | None = None
    """The state fields it writes (``state_fields``)."""
    folded_in: int | None = None
    """The incident's epoch (see ``Model.epoch``) when the entry left the stream."""

    @property
    def position(self) -> str:
        """Where the entry sorts in the stream (as fold.lua compares positions)."""
        return stream_position(self.entry_id)


def merge(entries: list[Entry]) -> Attributes:
    """The state fields ``entries`` add up to, in any fold order: later entries win field by
    field, in stream order, and a field nobody names is kept; the last DELETE (its mark
    kept) drops every field of the entries before it."""
    ordered = sorted(entries, key=lambda e: e.position)
    deletes = [e.position for e in ordered if e.fields and DELETE_FIELD in e.fields]
    last_delete = deletes[-1] if deletes else None
    merged: Attributes = {} if last_delete is None else {DELETE_FIELD: last_delete}
    for entry in ordered:
        assert entry.fields is not None
        if last_delete is None or entry.position > last_delete:
            merged.update(entry.fields)
    return merged


@dataclass(slots=True)
class Request:
    """One request of a claimed state (its POST, PATCH or DELETE), what it carries, and
    whether it landed at the API (or may yet)."""

    rid: int
    """Requests are numbered in the order they were sent."""
    token: str
    incident: str
    """The state id."""
    epoch: int
    """The state's epoch when claimed: versions count again from 1 after an expiry."""
    version: int
    step: str
    """``post``, ``patch`` or ``delete`` (``operations.Step``)."""
    body: Attributes | None
    """What it asks the API to apply: the POST's attributes, the PATCH's (no prefix), or
    None for a DELETE."""
    claimed: Attributes
    """The claimed state's fields: its DELETE mark and POST say what the request follows."""
    lease_end_ms: int
    landed: bool = False
    """The API processed it (applied it, or answered 404: see ``status``)."""
    status: int | None = None
    """What the API answered when it processed it: 202, or 404 for a PATCH or DELETE of an
    id it does not hold."""
    never_lands: bool = False
    """Refused, never sent, or its lease ended before it landed: it can no longer land."""
    answered: bool = False

    @property
    def mark(self) -> str | None:
        """The DELETE the claimed state followed (its position), or None."""
        mark = self.claimed.get(DELETE_FIELD)
        return mark if isinstance(mark, str) else None

    @property
    def applied(self) -> bool:
        """Whether the API applied it (processed and answered 202)."""
        return self.landed and self.status == ACCEPTED

    @property
    def open(self) -> bool:
        """Neither landed nor known never to land."""
        return not self.landed and not self.never_lands

    def may_land(self, now_ms: int) -> bool:
        """Whether the API may still apply it (no request lands after its lease ends)."""
        return not self.landed and not self.never_lands and now_ms < self.lease_end_ms


@dataclass(slots=True)
class Lease:
    """One claim the engine handed out, until its holder settles it or its lease lapses."""

    incident: str
    token: str
    end_ms: int
    settled: bool = False
    lapsed: bool = False


@dataclass(slots=True)
class Model:
    """Everything the test knows independently of the engine."""

    entries: list[Entry] = field(default_factory=list)
    epoch: dict[str, int] = field(default_factory=dict)
    """Bumped when a state expires: entries folded before it no longer count."""
    expired: dict[str, tuple[Attributes, bool]] = field(default_factory=dict)
    """The state's fields when it last expired, and whether it was a dead letter."""
    applied: dict[str, Attributes] = field(default_factory=dict)
    """What the simulated API holds per id: the POST's attributes and the PATCH's
    (``patch.*``); absent when it holds nothing (never posted, or deleted)."""
    history: dict[str, list[Request]] = field(default_factory=dict)
    """The requests the API applied per id, in the order it applied them."""
    forgotten_seconds: set[str] = field(default_factory=set)
    """Seconds (``second_slot``) whose holder the engine forgot (its key expired): another
    deployment may take them at Datadog since (the retention's limit)."""
    disturbed: set[str] = field(default_factory=set)
    """Ids at which a request landed after one sent later had been applied (a request in
    doubt landing late): the order checks are off for them until the engine's resend has
    repaired it, which I2 checks once quiet (then they are cleared)."""
    landings: dict[tuple[str, int, int, str], int] = field(default_factory=dict)
    """How often each (state, epoch, version, step) was applied by the API."""
    doubts: dict[str, int] = field(default_factory=dict)
    """Attempts per state whose fate the worker could not know (timeouts)."""
    lapses: dict[str, int] = field(default_factory=dict)
    """Leases per state that lapsed before their holder settled them."""
    requests: list[Request] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)

    # --- publishing and folding ----------------------------------------------------------

    def valid(self, incident: str | None = None) -> list[Entry]:
        """Valid entries (of state ``incident``), in the order they were published."""
        return [
            e
            for e in self.entries
            if e.incident is not None and (incident is None or e.incident == incident)
        ]

    def newest(self, incident: str) -> Attributes | None:
        """What the API must hold for ``incident`` once quiet (I2): what every valid entry
        ever published for it asks for (``at_api`` of their merge)."""
        return at_api(merge(self.valid(incident)))

    def folded(self, incident: str) -> list[Entry]:
        """Entries folded into the state's current epoch (since it last expired)."""
        epoch = self.epoch.get(incident, 0)
        return [e for e in self.valid(incident) if e.folded_in == epoch]

    def expire(self, incident: str, state: Attributes, *, dead: bool) -> None:
        """The state (a dead letter or not) expired: the next entry starts anew."""
        self.epoch[incident] = self.epoch.get(incident, 0) + 1
        self.expired[incident] = (state, dead)

    def earlier_finishes(self, incident: str) -> list[Any]:
        """``finished_at`` values folded into states of ``incident`` that expired since: what
        a finish record may give a state made again."""
        epoch = self.epoch.get(incident, 0)
        return [
            e.fields["finished_at"]
            for e in self.valid(incident)
            if e.fields is not None
            and "finished_at" in e.fields
            and e.folded_in is not None
            and e.folded_in < epoch
        ]

    # --- the simulated API ---------------------------------------------------------------

    def land(self, request: Request) -> None:
        """The API processes ``request`` as Datadog does: a POST upserts the event's
        attributes (keeping what PATCHes set), a PATCH of a held deployment updates its
        ``change_failure`` and ``remediation``, a DELETE of a held event deletes it; a PATCH
        or DELETE of an id it does not hold is answered 404 and changes nothing."""
        assert request.open, f"request {request.rid} cannot land again"
        request.landed = True
        state, held = request.incident, self.applied.get(request.incident)
        if request.step != POST and held is None:
            request.status = NOT_FOUND
            return
        request.status = ACCEPTED
        history = self.history.setdefault(state, [])
        if any(earlier.rid > request.rid for earlier in history):
            self.disturbed.add(state)
        if state not in self.disturbed:
            self.check_order(request, history)
        history.append(request)
        if request.step == DELETE:
            del self.applied[state]
        elif request.step == PATCH:
            assert held is not None
            assert request.body is not None
            self.applied[state] = {**held, **prefixed(request.body)}
        else:
            assert request.body is not None
            kept = {k: v for k, v in (held or {}).items() if k.startswith(PATCH_FIELD_PREFIX)}
            self.applied[state] = {**request.body, **kept}
        key = (state, request.epoch, request.version, request.step)
        self.landings[key] = self.landings.get(key, 0) + 1

    def check_order(self, request: Request, history: list[Request]) -> None:
        """The order the API applies requests of one id in (all but doubt's late landings):

        - a PATCH lands only after the POST it follows (the claimed state's, unless that
          state had none: Datadog holds it from before, or it was deleted) was applied since
          the last DELETE the API applied, or a POST sent after the PATCH was;
        - after a DELETE, nothing lands that the DELETE was to drop: a POST or PATCH then
          comes from a state that followed that DELETE (or a later one), or from a state
          made again after that state expired.
        """
        since_delete: list[Request] = []
        for earlier in history:
            since_delete = [] if earlier.step == DELETE else [*since_delete, earlier]
        post = post_part(request.claimed)
        if request.step == PATCH and post:
            assert any(
                earlier.step == POST and (earlier.body == post or earlier.rid > request.rid)
                for earlier in since_delete
            ), (
                f"order: PATCH {request.rid} of {request.incident} applied before its POST "
                f"{post} (applied: {[(r.rid, r.step) for r in history]})"
            )
        if request.step == DELETE:
            return
        for earlier in history:
            if earlier.step != DELETE or earlier.epoch < request.epoch:
                continue
            mark, deleted = request.mark or "", earlier.mark or ""
            assert mark >= deleted, (
                f"order: {request.step.upper()} {request.rid} of {request.incident} (after "
                f"DELETE {mark}) applied after DELETE {earlier.rid} ({deleted}), which drops it"
            )

    def count(self, table: dict[str, int], incident: str) -> None:
        """One more doubt or lapse for ``incident``."""
        table[incident] = table.get(incident, 0) + 1

    def settled(self, incident: str, token: str) -> None:
        """The holder of ``token`` settled its claim on ``incident``."""
        lease = next(
            lease
            for lease in self.leases
            if lease.incident == incident and lease.token == token and not lease.settled
        )
        lease.settled = True

    def live_leases(self, incident: str, now_ms: int) -> list[Lease]:
        """Claims on ``incident`` whose holder may still act on them."""
        return [
            lease
            for lease in self.leases
            if lease.incident == incident and not lease.settled and lease.end_ms > now_ms
        ]

    def lapse(self, now_ms: int) -> None:
        """Time passed ``now_ms``: unsettled leases that ended lapse (counted once each)."""
        for lease in self.leases:
            if not lease.settled and not lease.lapsed and lease.end_ms <= now_ms:
                lease.lapsed = True
                self.count(self.lapses, lease.incident)

    def duplicate_bound(self, incident: str) -> int:
        """How often one request (one step of one version) of ``incident`` may land (I3).

        Once, plus twice per attempt in doubt and per lapsed lease: the request may land
        besides the one that follows it, and since it may land after that one, the current
        version is sent once more when it no longer can. With several steps (DELETE, POST,
        PATCH) that resend sends each step once more (the ``forget`` wait), still one per
        doubt or lapse, so the bound holds per step; a PATCH or DELETE answered 404 is not
        applied and not counted.
        """
        return 1 + 2 * (self.doubts.get(incident, 0) + self.lapses.get(incident, 0))
