"""What a dead letter keeps of a stream entry no worker can use: its raw payload, bounded. Pure.

The payload is a JSON object of the entry's fields, name -> value, in the order read. When
every name and value is UTF-8 they are kept as text (``utf-8``); otherwise every name and
value is the base64 of its raw bytes (``base64``), so any bytes at all survive exactly.
Past ``PAYLOAD_MAX_BYTES`` of raw names and values the rest is cut (``truncated``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from forwarder.entry import RawFields, entry_bytes
from forwarder.jsontext import printable
from forwarder.protocol import PAYLOAD_BASE64, PAYLOAD_UTF8

PAYLOAD_MAX_BYTES: Final = 65_536
"""Raw bytes of field names and values a dead letter keeps of one entry."""

FIELD_OVERHEAD_BYTES: Final = 8
"""Counted per field against the bound, so that a million empty fields are cut too."""

REASON_MAX_CHARS: Final = 2_000
"""Longest reason a dead letter (or a log line) carries."""


@dataclass(frozen=True, slots=True)
class PoisonEntry:
    """An entry no worker can use: it becomes a dead letter with its raw payload."""

    entry_id: str
    reason: str
    payload: str
    """JSON object of the entry's fields, names and values in ``encoding``."""
    encoding: str = PAYLOAD_UTF8
    """``utf-8`` (names and values as text) or ``base64`` (of their raw bytes)."""
    size_bytes: int = 0
    """Raw bytes of all the entry's names and values, whether kept or cut."""
    truncated: bool = False


def bounded_reason(text: str) -> str:
    """``text`` made printable (no control characters, no lone surrogates) and bounded."""
    shown = printable(text)
    if len(shown) <= REASON_MAX_CHARS:
        return shown
    more = len(shown) - REASON_MAX_CHARS
    return shown[:REASON_MAX_CHARS] + f"... ({more} more characters)"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _as_text(data: bytes) -> str:
    # Only called on UTF-8 that may have been cut inside a character: drop that character.
    return data.decode("utf-8", "ignore")


def _as_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def poison_entry(entry_id: str, fields: RawFields, reason: str) -> PoisonEntry:
    """The dead letter of entry ``entry_id``: ``reason`` and the bounded, faithful payload."""
    raw = entry_bytes(fields)
    size = sum(len(name) + len(value) for name, value in raw.items())
    text = all(_is_utf8(name) and _is_utf8(value) for name, value in raw.items())
    encode: Callable[[bytes], str] = _as_text if text else _as_base64
    kept: dict[str, str] = {}
    budget = PAYLOAD_MAX_BYTES
    truncated = False
    for name, value in raw.items():
        budget -= FIELD_OVERHEAD_BYTES + len(name)
        if budget < 0:
            truncated = True
            break
        if len(value) > budget:
            truncated = True
        kept[encode(name)] = encode(value[:budget])
        budget -= len(value)
    return PoisonEntry(
        entry_id=entry_id,
        reason=bounded_reason(reason),
        payload=json.dumps(kept, ensure_ascii=False, separators=(",", ":")),
        encoding=PAYLOAD_UTF8 if text else PAYLOAD_BASE64,
        size_bytes=size,
        truncated=truncated,
    )
