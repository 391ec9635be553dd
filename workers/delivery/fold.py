"""Pure policy of ingest: turn stream entries into per-field updates, and the merge rule.

The merge itself runs in Redis (``lua/fold.lua``) so that it is atomic with the XACK;
``merge`` here is its reference, and a contract test holds the two to the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from forwarder.entry import InvalidEntryError, RawFields, decode_entry, entry_bytes
from forwarder.protocol import DELETE_FIELD, FIELD_REPLAY, PATCH_FIELD_PREFIX, state_id
from workers.delivery.poison import PoisonEntry, poison_entry

_REPLAY: Final = FIELD_REPLAY.encode()


@dataclass(frozen=True, slots=True)
class FieldUpdate:
    """One attribute as written by the entry at stream ``position``; ``value`` is JSON."""

    field: str
    position: str
    value: str


@dataclass(frozen=True, slots=True)
class IncidentUpdate:
    """Everything a batch says about one incident, latest write per field."""

    incident_id: str
    fields: tuple[FieldUpdate, ...]
    force: bool = False
    """A replay: deliver again even if no value changes."""


@dataclass(frozen=True, slots=True)
class FoldPlan:
    """What folding a batch does: updates to apply, entries to dead-letter, ids to ack."""

    ack_ids: tuple[str, ...]
    updates: tuple[IncidentUpdate, ...]
    poison: tuple[PoisonEntry, ...]


def stream_position(entry_id: str) -> str:
    """A fixed-width form of a stream id (``ms-seq``) that sorts as the stream does."""
    millis, _, seq = entry_id.partition("-")
    return f"{int(millis):015d}-{int(seq or 0):010d}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def plan_fold(entries: Sequence[tuple[bytes | str, RawFields]]) -> FoldPlan:
    """Decide what a batch of ``(entry id, fields)`` does, in stream order.

    Every entry is acknowledged: a valid one through the update it contributes, a bad one
    through its dead letter. Within the batch the later entry wins field by field. Total:
    whatever bytes an entry holds, it ends in the plan, never in an exception.
    """
    ordered = sorted(
        ((_text(eid), fields) for eid, fields in entries), key=lambda item: stream_position(item[0])
    )
    latest: dict[str, dict[str, FieldUpdate]] = {}
    forced: set[str] = set()
    poison: list[PoisonEntry] = []
    for entry_id, fields in ordered:
        try:
            event = decode_entry(fields)
            attributes = {
                name: json.dumps(value, separators=(",", ":"))
                for name, value in event.attributes().items()
            }
        except InvalidEntryError as exc:
            poison.append(poison_entry(entry_id, fields, str(exc)))
            continue
        except Exception as exc:  # I7: one entry must never stop the batch
            # decode_entry raises nothing else on any bytes (a fuzz test holds it to that);
            # should a bug slip through, the entry waits as a dead letter, to replay once fixed.
            reason = f"the worker failed to decode this entry ({type(exc).__name__}: {exc})"
            poison.append(poison_entry(entry_id, fields, reason))
            continue
        position = stream_position(entry_id)
        state = state_id(event.KIND, event.event_id)
        fields_of = latest.setdefault(state, {})
        if entry_bytes(fields).get(_REPLAY) == b"1":
            forced.add(state)
        for name, value in attributes.items():
            # Each DELETE is its own mark (its position), so that a second one (after the
            # id was published again) is a change, while a re-read of the same entry is not.
            stored = json.dumps(position) if name == DELETE_FIELD else value
            fields_of[name] = FieldUpdate(name, position, stored)
    updates = tuple(
        IncidentUpdate(incident_id, tuple(by_field.values()), incident_id in forced)
        for incident_id, by_field in latest.items()
    )
    return FoldPlan(tuple(eid for eid, _ in ordered), updates, tuple(poison))


def poison_plan(entry_id: bytes | str, fields: RawFields, reason: str) -> FoldPlan:
    """A plan that only dead-letters one entry (and acknowledges it), with ``reason``."""
    eid = _text(entry_id)
    return FoldPlan((eid,), (), (poison_entry(eid, fields, reason),))


@dataclass(frozen=True, slots=True)
class StoredField:
    """A field of the stored state: its JSON value and the position that wrote it."""

    position: str
    value: str


def merge(
    stored: Mapping[str, StoredField], update: IncidentUpdate
) -> tuple[dict[str, StoredField], bool]:
    """The merged state after ``update``, and whether any value changed (or it is a replay).

    Last writer wins per field by stream position; a field an update does not name is kept
    (so a start never clears ``finished_at``); an update that changes no value is a duplicate.
    A DELETE (field ``delete``) drops every field older than it, and any write older than it
    is ignored, whatever order entries are folded in.
    """
    merged = dict(stored)
    changed = update.force
    deleted_at = merged[DELETE_FIELD].position if DELETE_FIELD in merged else None
    for item in update.fields:
        seen = merged.get(item.field)
        if seen is not None and item.position <= seen.position:
            continue
        if item.field != DELETE_FIELD and deleted_at is not None and item.position < deleted_at:
            continue
        changed = changed or seen is None or seen.value != item.value
        merged[item.field] = StoredField(item.position, item.value)
        if item.field == DELETE_FIELD:
            deleted_at = item.position
            for name in [n for n, f in merged.items() if n != DELETE_FIELD]:
                if merged[name].position < deleted_at:
                    del merged[name]
    return merged, changed


def is_complete(attributes: Mapping[str, object]) -> bool:
    """Whether a merged state's POST can be sent: Datadog needs started_at, and services or
    team for an incident (a deployment's ``service`` is required by its model, so it always
    has it)."""
    return "started_at" in attributes and (
        "services" in attributes or "team" in attributes or "service" in attributes
    )


def owes_something_now(attributes: Mapping[str, object]) -> bool:
    """Whether a folded state has a request to make at once: a complete POST, a PATCH or a
    DELETE (fold.lua's ``ready``); otherwise it is a finish waiting for its start."""
    return (
        is_complete(attributes)
        or DELETE_FIELD in attributes
        or any(name.startswith(PATCH_FIELD_PREFIX) for name in attributes)
    )
