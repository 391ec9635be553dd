"""The model test's invariants: the reference model against what Redis holds, as assertions.

Pure functions of the model (``model.py``) and a snapshot of the engine's state
(``model_engine.Snapshot``); ``test_model.py`` calls them after every step (I1, I3), when a
state expires (I1) and once quiet (I2). Each returns the name of the case it met, for
hypothesis' statistics.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from forwarder.protocol import KIND_FAILURE, parse_state_id
from tests.delivery.model import (
    CLASH_ID,
    DELETE,
    DEPLOYMENT_IDS,
    DEPLOYMENTS,
    PATCH,
    POST,
    STATES,
    Attributes,
    Model,
    Request,
    at_api,
    merge,
    second_slot,
)
from tests.delivery.model_engine import API_KEY, APP_KEY, Snapshot


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
    for incident in STATES:
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


def same_second_named(snap: Snapshot) -> None:
    """A deployment dead-lettered for the same second as another names both: its own id and
    the other's (only ``CLASH_ID`` and the first deployment ever share a second)."""
    pair = {DEPLOYMENT_IDS[0], CLASH_ID}
    for letter in snap.letters:
        reason = letter.get("reason", "")
        if "same second" not in reason:
            continue
        _, own = parse_state_id(letter.get("incident_id", ""))
        assert own in pair, f"{own} shares a second with no other deployment: {reason}"
        (other,) = pair - {own}
        assert f"deployment {own} " in reason, f"the letter does not name {own}: {reason}"
        assert f"deployment {other} " in reason, f"the letter does not name {other}: {reason}"


def one_per_second(model: Model, snap: Snapshot) -> None:
    """Once quiet, the API holds no two deployments of one service and env in one second
    (Datadog keeps one: the later would have overwritten the other, silently). The simulated
    API keeps both, so that this shows.

    Two exceptions, both limits of the engine: the engine forgot who held that second (its
    key expired with the retention) since; or a POST or DELETE of one of the two was
    dead-lettered. fold.lua frees a deployment's second when a DELETE or a POST with another
    start is folded, not when Datadog accepts it, so another deployment may be sent into
    the second Datadog still holds for the first. Once the first's DELETE or new POST lands,
    that passes; if it is dead-lettered instead (for any reason, or as a same-second clash
    when the first is folded back into its old second), Datadog keeps the first deployment
    in its old second, beside (or overwritten by) the other.
    """
    holders: dict[str, list[str]] = {}
    for state in DEPLOYMENTS:
        held = model.applied.get(state)
        if held is not None:
            slot = second_slot(held["service"], held.get("env"), held["started_at"])
            holders.setdefault(slot, []).append(state)
    moved_dead = {
        letter.get("incident_id")
        for letter in snap.letters
        if str(json.loads(letter.get("detail") or "{}").get("request", "")).startswith(
            ("DELETE ", "POST ")
        )
    }
    for slot, states in holders.items():
        assert len(states) == 1 or slot in model.forgotten_seconds or moved_dead & set(states), (
            f"once quiet, the API holds {states} in one second ({slot})"
        )


def duplicates_are_bounded(model: Model) -> None:
    """I3: no request of a version lands more often than doubts and lapsed leases explain."""
    for (incident, epoch, version, step), count in model.landings.items():
        bound = model.duplicate_bound(incident)
        assert count <= bound, (
            f"I3: {step} of {incident} v{version} (epoch {epoch}) landed {count} times "
            f"(bound {bound})"
        )


def covers(applied: Attributes | None, wanted: Attributes | None) -> bool:
    """Whether the API's holding ``applied`` has all of ``wanted`` (nothing when it is None)."""
    if wanted is None:
        return applied is None
    return applied is not None and all(applied.get(k) == v for k, v in wanted.items())


def newest_landed(model: Model, snap: Snapshot) -> list[str]:
    """I2, once quiet: the API holds what each id's entries ask for, in stream order: nothing
    when the last of them is a DELETE (no resurrection), else the merged POST and PATCH.

    Or, for an id something of which was dead-lettered: what the newest state the engine
    holds asks for (I1 holds it to what was folded), unless that is a dead letter too. The
    two differ only when a state expired after a dead letter: what was dead-lettered then
    is not remembered (a delivered finish is), and later entries make a state without it. A
    state made again that Datadog holds already (a late copy of a delivered finish) is not
    sent: the API then holds all of it, and more.
    """
    cases = []
    for incident in STATES:
        if not model.valid(incident):
            continue
        newest, applied = model.newest(incident), model.applied.get(incident)
        if applied == newest:
            cases.append("I2: the newest state landed" if newest else "I2: deleted, and gone")
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
        held = covers(applied, at_api(stored))
        assert is_dead or held, f"{failure}, nor the engine's state {stored}"
        cases.append(
            "I2: the newest state is a dead letter" if is_dead else "I2: after a dead letter"
        )
    return cases


def as_sent(request: Request, sent: httpx.Request) -> None:
    """What reached the API is ``request`` as Datadog takes it: the method and path of its
    step, both keys on a PATCH or DELETE (the API key alone on a POST), and its body."""
    kind, event_id = parse_state_id(request.incident)
    noun = "failure" if kind == KIND_FAILURE else "deployment"
    app_key = sent.headers.get("DD-APPLICATION-KEY")
    assert sent.headers.get("DD-API-KEY") == API_KEY, "the API key is missing"
    body = json.loads(sent.content) if sent.content else None
    expected: tuple[str, str, str | None, Any]
    if request.step == POST:
        expected = ("POST", f"/api/v2/dora/{noun}", None, {"data": {"attributes": request.body}})
    elif request.step == PATCH:
        data: dict[str, Any] = {"id": event_id, "type": "dora_deployment_patch_request"}
        expected = (
            "PATCH",
            f"/api/v2/dora/deployments/{event_id}",
            APP_KEY,
            {"data": {**data, "attributes": request.body}},
        )
    else:
        assert request.step == DELETE
        expected = ("DELETE", f"/api/v2/dora/{noun}/{event_id}", APP_KEY, None)
    got = (sent.method, sent.url.path, app_key, body)
    assert got == expected, f"request {request.rid} went out as {got}, not {expected}"
