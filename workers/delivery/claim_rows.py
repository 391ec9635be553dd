"""Reading what ``claim.lua`` returns: a row of a state's fields into a ``Claim``.

Pure: the row comes from Redis, but nothing here talks to it. The batch is in flight already
when it is read, so a field that does not parse marks its claim unusable instead of raising.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from forwarder.protocol import ATTRIBUTE_PREFIX, PATCH_FIELD_PREFIX, StateField
from workers.delivery.records import Claim

_BOOKKEEPING: Final = frozenset(
    {
        StateField.VERSION,
        StateField.SENT,
        StateField.ATTEMPT,
        StateField.FIRST_MS,
        StateField.FAILING_SINCE_MS,
        StateField.PUBLISHED_MS,
        StateField.DOUBT_UNTIL_MS,
    }
)
"""The integer fields of an incident's hash a claim carries."""

_DONE: Final = frozenset({StateField.DONE_POST, StateField.DONE_PATCH, StateField.DONE_DELETE})


def claim_from_row(row: Sequence[bytes], claimed_at_ms: int, app_key_until_ms: int = 0) -> Claim:
    """The claim a row of ``claim.lua``'s reply describes.

    The batch is in flight already: a field that does not parse must not raise (that would
    strand the whole batch, lease after lease), so it marks this claim alone as unusable.
    """
    incident_id = row[0].decode(errors="replace")
    attributes: dict[str, Any] = {}
    numbers: dict[str, int] = {}
    remembered: str | None = None
    done: dict[str, str] = {}
    same_second_as: str | None = None
    problems: list[str] = []
    for name, value in zip(row[1::2], row[2::2], strict=True):
        key = name.decode(errors="replace")
        try:
            if key.startswith(ATTRIBUTE_PREFIX):
                attributes[key[len(ATTRIBUTE_PREFIX) :]] = json.loads(value)
            elif key in _BOOKKEEPING:
                numbers[key] = int(value)
            elif key == StateField.REMEMBERED:
                remembered = value.decode()
            elif key in _DONE:
                done[key] = value.decode()
            elif key == StateField.SAME_SECOND_AS:
                same_second_as = value.decode()
        except ValueError as exc:  # JSON, int() and UTF-8 errors are all ValueErrors
            problems.append(f"field {key!r} = {_shown(value)} does not parse ({exc})")
            if key.startswith(ATTRIBUTE_PREFIX):
                # Kept as stored, so that the dead letter loses nothing.
                attributes[key[len(ATTRIBUTE_PREFIX) :]] = value.decode(errors="replace")
    return Claim(
        incident_id=incident_id,
        version=numbers.get(StateField.VERSION, 0),
        sent_version=numbers.get(StateField.SENT, 0),
        attempt=numbers.get(StateField.ATTEMPT, 0),
        first_seen_ms=numbers.get(StateField.FIRST_MS, 0),
        failing_since_ms=numbers.get(StateField.FAILING_SINCE_MS),
        attributes=attributes,
        claimed_at_ms=claimed_at_ms,
        published_ms=numbers.get(StateField.PUBLISHED_MS),
        remembered_digest=remembered,
        doubt_until_ms=numbers.get(StateField.DOUBT_UNTIL_MS),
        done=done,
        same_second_as=same_second_as,
        app_key_paused_until_ms=app_key_until_ms,
        problem="; ".join(problems) or None,
    )


def version_name(attributes: dict[str, Any]) -> str | None:
    """``<service> <env> <version>`` as fold.lua names it (their JSON), from a PATCH by
    version's attributes; None when one is missing."""
    names = [
        attributes.get(f"{PATCH_FIELD_PREFIX}{field}") for field in ("service", "env", "version")
    ]
    if names[0] is None or names[2] is None:
        return None
    return " ".join(json.dumps(value, separators=(",", ":")) for value in names)


def _shown(value: bytes, limit: int = 80) -> str:
    """A stored value as a reason may quote it: repr'd, cut to ``limit`` characters."""
    text = repr(value.decode(errors="replace"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reply_text(value: object) -> str:
    """A string of claim.lua's reply, as str (bytes without ``decode_responses``)."""
    return value.decode() if isinstance(value, bytes) else str(value)
