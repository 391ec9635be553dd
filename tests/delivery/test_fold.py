"""Pure merging: how a batch of stream entries becomes per-incident field updates."""

from __future__ import annotations

import json
from typing import Any

from tests.delivery.events import FINISH, ID, START, entry
from workers.delivery.fold import (
    IncidentUpdate,
    StoredField,
    is_complete,
    merge,
    plan_fold,
    stream_position,
)


def state_after(*entries: tuple[str, dict[str, str]]) -> dict[str, Any]:
    """Fold entries batch by batch (one entry per batch) and return the decoded state."""
    stored: dict[str, StoredField] = {}
    for item in entries:
        for update in plan_fold([item]).updates:
            stored, _ = merge(stored, update)
    return {name: json.loads(field.value) for name, field in stored.items()}


def test_stream_position_sorts_like_the_stream() -> None:
    """Positions compare as stream ids do, whatever their digit counts."""
    ids = ["999-5", "1000-0", "1000-10", "1000-9", "12345678901234-0"]
    assert sorted(ids, key=stream_position) == [
        "999-5",
        "1000-0",
        "1000-9",
        "1000-10",
        "12345678901234-0",
    ]


def test_start_then_finish_coalesce_into_one_update() -> None:
    """A start and its finish in one batch become one incident with both times."""
    plan = plan_fold([entry("1-0", START), entry("1-1", FINISH)])
    assert len(plan.updates) == 1
    fields = {f.field: json.loads(f.value) for f in plan.updates[0].fields}
    assert fields["started_at"] == 1_700_000_000_000_000_000
    assert fields["finished_at"] == 1_700_000_600_000_000_000
    assert plan.ack_ids == ("1-0", "1-1")


def test_finish_by_id_completes_the_stored_start() -> None:
    """A finish naming only the id adds finished_at to what the start stored."""
    state = state_after(entry("1-0", START), entry("2-0", FINISH))
    assert state["services"] == ["checkout"]
    assert state["finished_at"] == 1_700_000_600_000_000_000
    assert is_complete(state)


def test_duplicate_changes_nothing() -> None:
    """A message that leaves the merged state unchanged is a duplicate."""
    stored: dict[str, StoredField] = {}
    for update in plan_fold([entry("1-0", START)]).updates:
        stored, changed = merge(stored, update)
        assert changed
    for update in plan_fold([entry("2-0", START)]).updates:
        _, changed = merge(stored, update)
        assert not changed


def test_out_of_order_batches_end_in_stream_order() -> None:
    """Whatever order batches are folded in, the later entry wins each field."""
    early = entry("1-0", {**START, "severity": "SEV-3"})
    late = entry("2-0", {"id": ID, "finished_at": 1_700_000_600, "severity": "SEV-1"})
    assert state_after(early, late) == state_after(late, early)
    assert state_after(late, early)["severity"] == "SEV-1"


def test_start_never_clears_finish() -> None:
    """A start re-sent after the finish keeps finished_at."""
    state = state_after(entry("1-0", START), entry("2-0", FINISH), entry("3-0", START))
    assert state["finished_at"] == 1_700_000_600_000_000_000


def test_later_entry_in_batch_wins() -> None:
    """Within a batch, the later of two writes to a field is kept."""
    plan = plan_fold(
        [entry("1-1", {**START, "severity": "late"}), entry("1-0", {**START, "severity": "early"})]
    )
    severity = next(f for f in plan.updates[0].fields if f.field == "severity")
    assert json.loads(severity.value) == "late"


def test_poison_entries_are_acked_and_reported() -> None:
    """Bad entries become dead letters with a reason; good neighbours still fold."""
    plan = plan_fold(
        [
            ("1-0", {"v": "1", "kind": "failure", "event": "{not json"}),
            ("1-1", {"v": "2", "kind": "failure", "event": "{}"}),
            ("1-2", {"v": "1", "kind": "deploy", "event": "{}"}),
            ("1-3", {"v": "1", "kind": "failure"}),
            ("1-4", {"v": "1", "kind": "failure", "event": json.dumps({"started_at": 1})}),
            entry("1-5", START),
        ]
    )
    reasons = [p.reason for p in plan.poison]
    assert [p.entry_id for p in plan.poison] == ["1-0", "1-1", "1-2", "1-3", "1-4"]
    assert "not valid JSON" in reasons[0]
    assert "unknown entry format version '2'" in reasons[1]
    assert "unknown event kind 'deploy'" in reasons[2]
    assert "no 'event' field" in reasons[3]
    assert "services: either services or team is required" in reasons[4]
    assert json.loads(plan.poison[0].payload)["event"] == "{not json"
    assert [u.incident_id for u in plan.updates] == [ID]
    assert len(plan.ack_ids) == 6


def test_bytes_from_redis_are_accepted() -> None:
    """Entries as redis-py returns them (bytes) decode like strings."""
    eid, fields = entry("5-0", START)
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    plan = plan_fold([(eid.encode(), raw)])
    assert plan.updates[0].incident_id == ID


def test_merge_ignores_older_write() -> None:
    """A field written by a later entry is not overwritten by an earlier one."""
    stored = {"severity": StoredField(stream_position("5-0"), '"new"')}
    update = IncidentUpdate(ID, (_field("severity", "1-0", '"old"'),))
    merged, changed = merge(stored, update)
    assert not changed
    assert merged["severity"].value == '"new"'


def _field(name: str, entry_id: str, value: str) -> Any:
    from workers.delivery.fold import FieldUpdate  # noqa: PLC0415

    return FieldUpdate(name, stream_position(entry_id), value)
