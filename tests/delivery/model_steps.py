"""The model test's steps: what publishers, workers, Datadog and time may do, and how often.

Each step is a small record (its repr is what a failing example prints); ``STEP`` draws
them with weights, so that a run is mostly traffic (publish, a pump's turn, answers) with
some of everything else. A step a defect still being fixed on another branch would trip
is left out (``KNOWN_DEFECTS``) until that fix is merged; ``MODEL_KNOWN=all`` (or a
comma-separated list of names) puts them back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from forwarder.protocol import (
    KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_DELETE,
    KIND_DEPLOYMENT_PATCH,
    KIND_FAILURE,
    KIND_FAILURE_DELETE,
)
from tests.delivery.model import (
    CLASH_ID,
    DEPLOYMENT_DURATIONS_S,
    DEPLOYMENT_IDS,
    DEPLOYMENT_START_OFFSETS_S,
    DEPLOYMENT_VERSIONS,
    ENVS,
    FINISH_OFFSETS_S,
    INCIDENTS,
    REMEDIATIONS,
    SERVICES,
    START_OFFSETS_S,
    deletion,
    deployment_event,
    finish_event,
    patch_event,
    start_event,
)
from tests.delivery.model_engine import (
    HEADERS,
    LEASE_MS,
    MAX_AGE_MS,
    ORPHAN_WAIT_MS,
    RETENTION_MS,
    Outcome,
)

KNOWN_DEFECTS: dict[str, str] = {}
"""Steps left out until the branch fixing what they find is merged (name -> the defect)."""
_RUN_ANYWAY = set(os.environ.get("MODEL_KNOWN", "").split(","))


def exercised(name: str) -> bool:
    """Whether the steps that would find known defect ``name`` run."""
    return name not in KNOWN_DEFECTS or name in _RUN_ANYWAY or "all" in _RUN_ANYWAY


@dataclass(frozen=True, slots=True)
class Publish:
    """A producer publishes an event of ``kind`` (any order, any repetition): an incident's
    start or finish, a deployment, a PATCH of a deployment, a DELETE of either."""

    event: dict[str, Any]
    kind: str = KIND_FAILURE


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A producer publishes again an event published before (``pick`` chooses which)."""

    pick: int


@dataclass(frozen=True, slots=True)
class Garbage:
    """Someone XADDs an entry no worker can use: any bytes, deep nesting, wrong fields."""

    fields: dict[bytes, bytes]


WORKER_ACTIONS = ("read", "fold", "ingest", "reclaim", "claim", "settle", "turn", "die")
"""What a worker may do in one step: read a batch (it stays pending until folded), fold
what it read, both (ingest), reclaim what others left pending and fold it, claim and send,
settle its batch of outcomes, a whole turn of the pump (ingest, settle, claim), or die."""


@dataclass(frozen=True, slots=True)
class Act:
    """Worker ``pick`` (modulo the workers) does ``action`` (one of ``WORKER_ACTIONS``)."""

    action: str
    pick: int


@dataclass(frozen=True, slots=True)
class Answer:
    """The API answers one request in flight (``pick``), as ``outcome`` says."""

    pick: int
    outcome: Outcome
    headers: str
    """A name in ``HEADERS``: the rate-limit headers the answer carries."""
    jitter: float
    """The backoff's random draw, in [0, 1]."""


@dataclass(frozen=True, slots=True)
class Land:
    """The API applies a request that may still land (``pick``): before its answer, after
    a timeout, or one sent by a worker that died since."""

    pick: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Time passes; requests in doubt whose lease ends meanwhile land first, or never."""

    ms: int
    late_requests_land: bool


Step = Publish | Duplicate | Garbage | Act | Answer | Land | Wait

_BYTES = st.binary(max_size=40) if exercised("poison") else st.text(max_size=20).map(str.encode)
_DEPTH = st.integers(1, 5_000) if exercised("poison") else st.integers(1, 50)


def _surely_invalid(fields: dict[bytes, bytes]) -> bool:
    """No garbage may happen to be a valid event: without either timestamp, none is."""
    blob = b"".join(k + v for k, v in fields.items())
    return b"started_at" not in blob and b"finished_at" not in blob


def _garbage() -> st.SearchStrategy[dict[bytes, bytes]]:
    header = {b"v": b"1", b"kind": b"failure"}
    events = st.one_of(
        _BYTES,
        _DEPTH.map(lambda n: b"[" * n + b"]" * n),
        _DEPTH.map(lambda n: b'{"id":' + b"[" * n + b"]" * n + b"}"),
        _BYTES.map(lambda raw: b'{"id":"' + raw + b'"}'),
    )
    extra = st.dictionaries(_BYTES, _BYTES, max_size=2)
    structured = st.builds(lambda e, more: {**more, **header, b"event": e}, events, extra)
    anything = st.dictionaries(_BYTES, _BYTES, min_size=1, max_size=4)
    return st.one_of(structured, anything).filter(_surely_invalid)


_PICK = st.integers(0, 10**6)
_OUTCOMES = st.sampled_from([*Outcome, Outcome.ACCEPTED, Outcome.ACCEPTED, Outcome.TIMEOUT])
"""Any answer; 2xx and timeouts (whose requests may land later) more often than the rest."""
_STARTS = st.builds(
    start_event,
    st.sampled_from(INCIDENTS),
    st.sampled_from(START_OFFSETS_S),
    st.sampled_from(SERVICES),
    st.sampled_from(ENVS),
)
_FINISHES = st.builds(finish_event, st.sampled_from(INCIDENTS), st.sampled_from(FINISH_OFFSETS_S))
_DEPLOYMENTS = st.builds(
    deployment_event,
    st.sampled_from(DEPLOYMENT_IDS),
    st.sampled_from(DEPLOYMENT_START_OFFSETS_S),
    st.sampled_from(DEPLOYMENT_DURATIONS_S),
    st.sampled_from(DEPLOYMENT_VERSIONS),
)
_PATCHES = st.builds(
    patch_event, st.sampled_from(DEPLOYMENT_IDS), st.booleans(), st.sampled_from(REMEDIATIONS)
)
_CLASHES = st.builds(
    deployment_event,
    st.just(CLASH_ID),
    st.just(DEPLOYMENT_START_OFFSETS_S[0]),
    st.sampled_from(DEPLOYMENT_DURATIONS_S),
    st.sampled_from(DEPLOYMENT_VERSIONS),
)
_DELETES = st.one_of(
    st.builds(
        Publish,
        st.sampled_from([*DEPLOYMENT_IDS, CLASH_ID]).map(deletion),
        st.just(KIND_DEPLOYMENT_DELETE),
    ),
    st.builds(Publish, st.sampled_from(INCIDENTS).map(deletion), st.just(KIND_FAILURE_DELETE)),
)
_HEADERS = st.sampled_from([name for name in HEADERS if name != "huge" or exercised("headers")])
_WAITS = st.one_of(
    st.integers(1, 5_000),
    st.integers(5_000, 2 * LEASE_MS),
    st.sampled_from([LEASE_MS, ORPHAN_WAIT_MS + 1, MAX_AGE_MS + 1, RETENTION_MS + 1]),
)

_KINDS: dict[str, tuple[int, st.SearchStrategy[Step]]] = {
    "publish": (4, st.builds(Publish, st.one_of(_STARTS, _FINISHES))),
    "deploy": (2, st.builds(Publish, _DEPLOYMENTS, st.just(KIND_DEPLOYMENT))),
    "patch": (2, st.builds(Publish, _PATCHES, st.just(KIND_DEPLOYMENT_PATCH))),
    "clash": (1, st.builds(Publish, _CLASHES, st.just(KIND_DEPLOYMENT))),
    "delete": (1, _DELETES),
    "duplicate": (1, st.builds(Duplicate, _PICK)),
    "garbage": (1, st.builds(Garbage, _garbage())),
    "turn": (6, st.builds(Act, st.just("turn"), _PICK)),
    "act": (3, st.builds(Act, st.sampled_from(WORKER_ACTIONS), _PICK)),
    "answer": (7, st.builds(Answer, _PICK, _OUTCOMES, _HEADERS, st.floats(0, 1))),
    "land": (2, st.builds(Land, _PICK)),
    "wait": (2, st.builds(Wait, _WAITS, st.booleans())),
}

STEP: st.SearchStrategy[Step] = st.sampled_from(
    [kind for kind, (weight, _) in _KINDS.items() for _ in range(weight)]
).flatmap(lambda kind: _KINDS[kind][1])
"""One step, drawn with the weights above (mostly traffic)."""
