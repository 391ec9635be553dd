"""Dead letters: list them, replay them through ingest, purge them.

A dead letter is an entry of the ``{prefix}:dead`` stream. Its ``source`` says what died:
``stream`` (an entry no worker could use; ``payload`` holds its raw fields) or ``incident``
(an incident Datadog rejected, that expired, or whose start never came; ``detail`` holds
the HTTP status, the response and the merged attributes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from forwarder.protocol import (
    ENTRY_VERSION,
    FIELD_EVENT,
    FIELD_KIND,
    FIELD_REPLAY,
    FIELD_VERSION,
    LetterField,
    LetterSource,
    RedisKeys,
    parse_state_id,
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter, as stored."""

    letter_id: str
    at_ms: int
    source: str
    incident_id: str | None
    reason: str
    detail: dict[str, Any] | None
    payload: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for ``--json``."""
        return {
            "id": self.letter_id,
            "at_ms": self.at_ms,
            "source": self.source,
            "incident_id": self.incident_id,
            "reason": self.reason,
            "detail": self.detail,
            "payload": self.payload,
        }

    def replay_entry(self) -> dict[str, str] | None:
        """The ingest entry that replays this letter, or None if there is nothing to send."""
        if self.source == LetterSource.INCIDENT and self.detail and self.detail.get("attributes"):
            return {
                FIELD_VERSION: ENTRY_VERSION,
                FIELD_KIND: parse_state_id(self.incident_id or "")[0],
                FIELD_EVENT: json.dumps(self.detail["attributes"], separators=(",", ":")),
                FIELD_REPLAY: "1",
            }
        if self.source == LetterSource.STREAM and self.payload:
            return {**{k: str(v) for k, v in self.payload.items()}, FIELD_REPLAY: "1"}
        return None


def _json(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {"unparsed": raw.decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def _letter(letter_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    def field(name: LetterField) -> bytes | None:
        return fields.get(name.encode())

    incident = field(LetterField.INCIDENT_ID)
    return DeadLetter(
        letter_id=letter_id.decode(),
        at_ms=int(field(LetterField.AT_MS) or b"0"),
        source=(field(LetterField.SOURCE) or b"?").decode(),
        incident_id=incident.decode() if incident else None,
        reason=(field(LetterField.REASON) or b"").decode(errors="replace"),
        detail=_json(field(LetterField.DETAIL)),
        payload=_json(field(LetterField.PAYLOAD)),
    )


Row = tuple[bytes, dict[bytes, bytes]]


def _rows(
    client: redis.Redis, key: str, low: str = "-", high: str = "+", count: int | None = None
) -> list[Row]:
    # redis-py types stream replies loosely; without decode_responses they are bytes.
    return cast(list[Row], client.xrange(key, min=low, max=high, count=count))


def list_letters(
    client: redis.Redis, keys: RedisKeys, limit: int | None = None
) -> list[DeadLetter]:
    """Dead letters, oldest first (at most ``limit``)."""
    return [
        _letter(letter_id, fields) for letter_id, fields in _rows(client, keys.dead, count=limit)
    ]


def select(client: redis.Redis, keys: RedisKeys, ids: Sequence[str]) -> list[DeadLetter]:
    """The letters with these ids, or all of them when ``ids`` is empty.

    Raises ``LookupError`` naming ids that are not dead letters.
    """
    if not ids:
        return list_letters(client, keys)
    found = []
    missing = []
    for letter_id in ids:
        rows = _rows(client, keys.dead, letter_id, letter_id)
        if rows:
            found.append(_letter(*rows[0]))
        else:
            missing.append(letter_id)
    if missing:
        raise LookupError("no dead letter with id " + ", ".join(missing))
    return found


def replay(client: redis.Redis, keys: RedisKeys, letters: Sequence[DeadLetter]) -> int:
    """Send each letter back through ingest and delete it, one transaction per letter.

    Merging applies (a newer state stored since wins field by field), dedupe does not: the
    replayed state is delivered again. Returns how many were replayed.
    """
    replayed = 0
    for letter in letters:
        entry = letter.replay_entry()
        if entry is None:
            continue
        pipe = client.pipeline(transaction=True)
        pipe.xadd(keys.ingest, entry)  # type: ignore[arg-type]
        pipe.xdel(keys.dead, letter.letter_id)
        pipe.execute()
        replayed += 1
    return replayed


def purge(client: redis.Redis, keys: RedisKeys, letters: Sequence[DeadLetter]) -> int:
    """Delete these letters for good; return how many were deleted."""
    if not letters:
        return 0
    return int(client.xdel(keys.dead, *[letter.letter_id for letter in letters]))
