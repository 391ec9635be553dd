"""The model test's reference: what was published, what Datadog holds, which requests are out.

Pure Python, no Redis: ``test_model.py`` drives the real engine and this model side by side,
and compares them. The model knows nothing of versions, due sets or leases beyond what it
needs to judge the engine from outside: the merged state every valid event adds up to, the
state the simulated API applied last, and how often each version landed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from forwarder import to_event
from workers.delivery.fold import stream_position

BASE_S = 1_700_000_000
"""Incidents' timestamps are offsets from this (seconds)."""
INCIDENTS = tuple(f"model-incident-{n:04d}" for n in range(3))
START_OFFSETS_S = (0, 60, 0, 60, 2_000)
"""2000 s is after every finish: a merged state that breaks Datadog's rule (a dead letter)."""
FINISH_OFFSETS_S = (600, 1_200)
SERVICES = (("checkout",), ("checkout", "payments"))
ENVS = ("prod", "staging")

Attributes = dict[str, Any]


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


def normalised(data: Attributes) -> Attributes:
    """The attributes the engine stores and sends for ``data`` (timestamps in ns, with id)."""
    attributes: Attributes = json.loads(json.dumps(to_event(data).attributes()))
    return attributes


@dataclass(slots=True)
class Entry:
    """One stream entry the test wrote: valid (its incident and attributes) or garbage."""

    entry_id: str
    incident: str | None
    """None: garbage, to end as a dead letter."""
    attributes: Attributes | None
    folded_in: int | None = None
    """The incident's epoch (see ``Model.epoch``) when the entry left the stream."""

    @property
    def position(self) -> str:
        """Where the entry sorts in the stream (as fold.lua compares positions)."""
        return stream_position(self.entry_id)


def merge(entries: list[Entry]) -> Attributes:
    """Later entries win field by field, in stream order; a field nobody names is kept."""
    merged: Attributes = {}
    for entry in sorted(entries, key=lambda e: e.position):
        assert entry.attributes is not None
        merged.update(entry.attributes)
    return merged


@dataclass(slots=True)
class Request:
    """One POST of a claimed state: its body, and whether it landed at the API (or may yet)."""

    rid: int
    token: str
    incident: str
    epoch: int
    """The incident's epoch when claimed: versions count again from 1 after an expiry."""
    version: int
    body: Attributes
    lease_end_ms: int
    landed: bool = False
    never_lands: bool = False
    """Refused, never sent, or its lease ended before it landed: it can no longer land."""
    answered: bool = False

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
    """Bumped when an incident's state expires: entries folded before it no longer count."""
    expired: dict[str, tuple[Attributes, bool]] = field(default_factory=dict)
    """The incident's state when it last expired, and whether it was a dead letter."""
    applied: dict[str, Attributes] = field(default_factory=dict)
    """What the simulated API holds per incident: the last body it applied."""
    landings: dict[tuple[str, int, int], int] = field(default_factory=dict)
    """How often each (incident, epoch, version) was applied by the API."""
    doubts: dict[str, int] = field(default_factory=dict)
    """Attempts per incident whose fate the worker could not know (timeouts)."""
    lapses: dict[str, int] = field(default_factory=dict)
    """Leases per incident that lapsed before their holder settled them."""
    requests: list[Request] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)

    # --- publishing and folding ----------------------------------------------------------

    def valid(self, incident: str | None = None) -> list[Entry]:
        """Valid entries (of ``incident``), in the order they were published."""
        return [
            e
            for e in self.entries
            if e.incident is not None and (incident is None or e.incident == incident)
        ]

    def newest(self, incident: str) -> Attributes:
        """The merged state of every valid entry ever published for ``incident`` (I2)."""
        return merge(self.valid(incident))

    def folded(self, incident: str) -> list[Entry]:
        """Entries folded into the incident's current state (since it last expired)."""
        epoch = self.epoch.get(incident, 0)
        return [e for e in self.valid(incident) if e.folded_in == epoch]

    def expire(self, incident: str, state: Attributes, *, dead: bool) -> None:
        """The incident's state (a dead letter or not) expired: the next entry starts anew."""
        self.epoch[incident] = self.epoch.get(incident, 0) + 1
        self.expired[incident] = (state, dead)

    def earlier_finishes(self, incident: str) -> list[Any]:
        """``finished_at`` values folded into states of ``incident`` that expired since: what
        a finish record may give a state made again."""
        epoch = self.epoch.get(incident, 0)
        return [
            e.attributes["finished_at"]
            for e in self.valid(incident)
            if e.attributes is not None
            and "finished_at" in e.attributes
            and e.folded_in is not None
            and e.folded_in < epoch
        ]

    # --- the simulated API ---------------------------------------------------------------

    def land(self, request: Request) -> None:
        """The API applies ``request``: its body replaces what the API held (an upsert)."""
        assert request.open, f"request {request.rid} cannot land again"
        request.landed = True
        self.applied[request.incident] = request.body
        key = (request.incident, request.epoch, request.version)
        self.landings[key] = self.landings.get(key, 0) + 1

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
        """How often one version of ``incident`` may land (I3).

        Once, plus twice per attempt in doubt and per lapsed lease: the request may land
        besides the one that follows it, and since it may land after that one, the current
        version is sent once more when it no longer can.
        """
        return 1 + 2 * (self.doubts.get(incident, 0) + self.lapses.get(incident, 0))
