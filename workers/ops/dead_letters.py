"""Dead letters: list them, replay them through ingest, purge them.

A dead letter is an entry of the ``{prefix}:dead`` stream. Its ``source`` says what died:
``stream`` (an entry no worker could use; ``payload`` holds its raw fields, as text or as
base64 per ``payload_encoding``, cut past 64 KiB) or ``incident`` (an incident Datadog
rejected, that expired, or whose start never came; ``detail`` holds the HTTP status, the
response and the merged attributes). Letters are read whatever bytes they hold.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from forwarder.protocol import (
    ENTRY_VERSION,
    FIELD_EVENT,
    FIELD_KIND,
    FIELD_REPLAY,
    FIELD_VERSION,
    KIND_DEPLOYMENT_DELETE,
    KIND_DEPLOYMENT_PATCH,
    KIND_DEPLOYMENT_PATCH_BY_VERSION,
    KIND_FAILURE,
    KIND_FAILURE_DELETE,
    PAYLOAD_BASE64,
    PAYLOAD_UTF8,
    STATE_DEPLOYMENT_VERSION,
    LetterField,
    LetterSource,
    RedisKeys,
    parse_state_id,
)
from workers.delivery.operations import split_state


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
    payload_encoding: str = PAYLOAD_UTF8
    """How ``payload``'s names and values hold the entry's bytes: ``utf-8`` or ``base64``."""
    payload_bytes: int | None = None
    """Raw size of the entry's names and values (None in letters written before it was kept)."""
    payload_truncated: bool = False
    entry_fields: dict[bytes, bytes] | None = field(default=None, repr=False, compare=False)
    """A stream entry's fields, raw, when the letter holds them whole (what replay sends)."""

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
            "payload_encoding": self.payload_encoding,
            "payload_bytes": self.payload_bytes,
            "payload_truncated": self.payload_truncated,
        }

    def replay_entries(self) -> list[dict[str, str]] | list[dict[bytes, bytes]]:
        """The ingest entries that replay this letter, in order; none if nothing can be sent.

        A stream entry is sent back byte for byte; one whose payload was cut is not sent. A
        state's letter becomes one entry per request it held: its DELETE, its POST, then its
        PATCH, so that they fold back in the order they are sent.
        """
        if self.source == LetterSource.INCIDENT and self.detail and self.detail.get("attributes"):
            attributes = self.detail["attributes"]
            if not isinstance(attributes, dict):
                return []
            return [
                {
                    FIELD_VERSION: ENTRY_VERSION,
                    FIELD_KIND: kind,
                    FIELD_EVENT: json.dumps(event, separators=(",", ":")),
                    FIELD_REPLAY: "1",
                }
                for kind, event in replay_events(self.incident_id or "", attributes)
            ]
        if self.source == LetterSource.STREAM and self.entry_fields:
            return [{**self.entry_fields, FIELD_REPLAY.encode(): b"1"}]
        return []


def replay_events(state_name: str, attributes: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(kind, event)`` of each entry that folds ``attributes`` back into state
    ``state_name``: the DELETE first, then the POST, then the PATCH."""
    kind, event_id = parse_state_id(state_name)
    parts = split_state(attributes)
    events: list[tuple[str, Any]] = []
    if parts.delete is not None:
        deletion = KIND_FAILURE_DELETE if kind == KIND_FAILURE else KIND_DEPLOYMENT_DELETE
        events.append((deletion, {"id": event_id}))
    if parts.post:
        events.append((kind, parts.post))
    if parts.patch and kind == STATE_DEPLOYMENT_VERSION:
        events.append((KIND_DEPLOYMENT_PATCH_BY_VERSION, parts.patch))
    elif parts.patch:
        events.append((KIND_DEPLOYMENT_PATCH, {**parts.patch, "id": event_id}))
    return events


def _entry_fields(
    payload: Mapping[str, Any] | None, encoding: str, truncated: bool
) -> dict[bytes, bytes] | None:
    """The entry's raw fields from a letter's payload; None when it does not hold them whole."""
    if not payload or truncated or not all(isinstance(v, str) for v in payload.values()):
        return None
    if encoding == PAYLOAD_UTF8:
        return {
            k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass")
            for k, v in payload.items()
        }
    if encoding != PAYLOAD_BASE64:
        return None
    try:
        return {
            base64.b64decode(k, validate=True): base64.b64decode(v, validate=True)
            for k, v in payload.items()
        }
    except binascii.Error:
        return None


def _json(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = _parsed(raw)
    if value is None:
        return {"unparsed": _text(raw)}
    return value if isinstance(value, dict) else {"value": value}


def _parsed(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _text(raw: bytes | None, default: str = "") -> str:
    # Letters are written by our scripts, but the stream is anyone's to XADD to.
    return default if raw is None else raw.decode("utf-8", "backslashreplace")


def _int(raw: bytes | None) -> int | None:
    text = _text(raw)
    return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None


def _letter(letter_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    def field(name: LetterField) -> bytes | None:
        return fields.get(name.encode())

    incident = field(LetterField.INCIDENT_ID)
    raw_payload = field(LetterField.PAYLOAD)
    payload = _parsed(raw_payload) if raw_payload is not None else None
    encoding = _text(field(LetterField.PAYLOAD_ENCODING), PAYLOAD_UTF8)
    truncated = field(LetterField.PAYLOAD_TRUNCATED) == b"1"
    return DeadLetter(
        letter_id=_text(letter_id),
        at_ms=_int(field(LetterField.AT_MS)) or 0,
        source=_text(field(LetterField.SOURCE), "?"),
        incident_id=_text(incident) if incident else None,
        reason=_text(field(LetterField.REASON)),
        detail=_json(field(LetterField.DETAIL)),
        payload=_json(raw_payload),
        payload_encoding=encoding,
        payload_bytes=_int(field(LetterField.PAYLOAD_BYTES)),
        payload_truncated=truncated,
        entry_fields=_entry_fields(
            payload if isinstance(payload, dict) else None, encoding, truncated
        ),
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
        entries = letter.replay_entries()
        if not entries:
            continue
        pipe = client.pipeline(transaction=True)
        for entry in entries:
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
