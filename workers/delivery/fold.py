"""Pure policy of ingest: turn stream entries into per-field updates, and the merge rule.

The merge itself runs in Redis (``lua/fold.lua``) so that it is atomic with the XACK;
``merge`` here is its reference, and a contract test holds the two to the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from forwarder.entry import InvalidEntryError, decode_entry
from forwarder.protocol import FIELD_REPLAY, state_id

RawFields = Mapping[bytes, bytes] | Mapping[str, str]


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
class PoisonEntry:
    """An entry no worker can use: it becomes a dead letter with its raw payload."""

    entry_id: str
    reason: str
    payload: str


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


def _field(fields: RawFields, name: str) -> str:
    """One field of an entry, whether redis-py gave bytes or a test gave str."""
    return next((_text(v) for k, v in fields.items() if _text(k) == name), "")


def plan_fold(entries: Sequence[tuple[bytes | str, RawFields]]) -> FoldPlan:
    """Decide what a batch of ``(entry id, fields)`` does, in stream order.

    Every entry is acknowledged: a valid one through the update it contributes, a bad one
    through its dead letter. Within the batch the later entry wins field by field.
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
        except InvalidEntryError as exc:
            payload = json.dumps({_text(k): _text(v) for k, v in fields.items()})
            poison.append(PoisonEntry(entry_id, str(exc), payload))
            continue
        position = stream_position(entry_id)
        state = state_id(event.KIND, event.event_id)
        fields_of = latest.setdefault(state, {})
        if _field(fields, FIELD_REPLAY) == "1":
            forced.add(state)
        for name, value in event.attributes().items():
            fields_of[name] = FieldUpdate(name, position, json.dumps(value, separators=(",", ":")))
    updates = tuple(
        IncidentUpdate(incident_id, tuple(by_field.values()), incident_id in forced)
        for incident_id, by_field in latest.items()
    )
    return FoldPlan(tuple(eid for eid, _ in ordered), updates, tuple(poison))


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
    """
    merged = dict(stored)
    changed = update.force
    for item in update.fields:
        seen = merged.get(item.field)
        if seen is None or item.position > seen.position:
            changed = changed or seen is None or seen.value != item.value
            merged[item.field] = StoredField(item.position, item.value)
    return merged, changed


def is_complete(attributes: Mapping[str, object]) -> bool:
    """Whether a merged state can be sent: Datadog needs started_at, and services or team
    for an incident (a deployment's ``service`` is required by its model, so it always has it).
    """
    return "started_at" in attributes and (
        "services" in attributes or "team" in attributes or "service" in attributes
    )
