"""The model test's invariants: the reference model against what Redis holds, as assertions.

Pure functions of the model (``model.py``) and a snapshot of the engine's state
(``model_engine.Snapshot``); ``test_model.py`` calls them after every step (I1, I3), when a
state expires (I1) and once quiet (I2). Each returns the name of the case it met, for
hypothesis' statistics.
"""

from __future__ import annotations

import json

from tests.delivery.model import INCIDENTS, Model, merge
from tests.delivery.model_engine import Snapshot


def dead(snap: Snapshot, incident: str, version: int) -> bool:
    """Whether ``version`` of ``incident`` is dead-lettered with a reason."""
    return snap.number(incident, "dead_version") >= version and any(
        letter.get("incident_id") == incident and letter.get("reason") for letter in snap.letters
    )


def quiet_when_expiring(snap: Snapshot, incident: str) -> bool:
    """I1 at expiry: the state that expires is delivered or dead-lettered, and idle.

    Returns whether it was a dead letter.
    """
    version = snap.number(incident, "version")
    is_dead = dead(snap, incident, version)
    quiet = (
        incident not in snap.due
        and incident not in snap.inflight
        and (snap.number(incident, "sent") >= version or is_dead)
    )
    assert quiet, f"I1: the state of {incident} expired while not delivered: {snap}"
    return is_dead


def nothing_is_lost(model: Model, snap: Snapshot) -> None:
    """I1: every folded entry is in its incident's state (or a dead letter, for garbage), and
    every state is due, in flight, delivered or dead-lettered with a reason."""
    for entry in model.entries:
        if entry.incident is None and entry.folded_in is not None:
            assert any(
                letter.get("entry_id") == entry.entry_id and letter.get("reason")
                for letter in snap.letters
            ), f"I1: garbage entry {entry.entry_id} left the stream without a dead letter"
    for incident in INCIDENTS:
        folded = model.folded(incident)
        if not folded:
            continue
        assert snap.states.get(incident), f"I1: the state of {incident} vanished"
        stored, expected = snap.attributes(incident), merge(folded)
        if "finished_at" not in expected and "finished_at" in stored:
            # A finish record gave the state made again the finish Datadog held.
            recalled = stored.pop("finished_at")
            assert recalled in model.earlier_finishes(incident), (
                f"I1: {incident} stores a finish {recalled} that was never folded"
            )
        assert stored == expected, f"I1: {incident} stores {stored}, folded {expected}"
        version = snap.number(incident, "version")
        tracked = (
            incident in snap.due
            or incident in snap.inflight
            or snap.number(incident, "sent") >= version
            or dead(snap, incident, version)
        )
        assert tracked, f"I1: {incident} is neither due, in flight, delivered nor dead: {snap}"


def duplicates_are_bounded(model: Model) -> None:
    """I3: no version lands more often than doubts and lapsed leases explain."""
    for (incident, epoch, version), count in model.landings.items():
        bound = model.duplicate_bound(incident)
        assert count <= bound, (
            f"I3: {incident} v{version} (epoch {epoch}) landed {count} times (bound {bound})"
        )


def newest_landed(model: Model, snap: Snapshot) -> list[str]:
    """I2, once quiet: the API holds each incident's newest merged state.

    Or, for an incident something of which was dead-lettered: the newest state the engine
    holds (I1 holds it to what was folded), unless that is a dead letter too. The two differ
    only when a state expired after a dead letter: what was dead-lettered then is not
    remembered (a delivered finish is), and later entries make a state without it. A state
    made again that Datadog holds already (a late copy of a delivered finish) is not sent:
    the API then holds all of it, and more.
    """
    cases = []
    for incident in INCIDENTS:
        if not model.valid(incident):
            continue
        newest, applied = model.newest(incident), model.applied.get(incident)
        if applied == newest:
            cases.append("I2: the newest state landed")
            continue
        failure = f"I2: once quiet, the API holds {applied} for {incident}, not {newest}"
        letters = [
            json.loads(letter["detail"]).get("attributes")
            for letter in snap.letters
            if letter.get("incident_id") == incident and letter.get("reason")
        ]
        assert letters, failure
        stored = snap.attributes(incident)
        if stored:
            version = snap.number(incident, "version")
            is_dead = snap.number(incident, "dead_version") >= version and stored in letters
        else:  # expired, and quiet then (checked): delivered, or a dead letter
            stored, is_dead = model.expired[incident]
        held = applied is not None and all(applied.get(k) == v for k, v in stored.items())
        assert is_dead or held, f"{failure}, nor the engine's state {stored}"
        cases.append(
            "I2: the newest state is a dead letter" if is_dead else "I2: after a dead letter"
        )
    return cases
