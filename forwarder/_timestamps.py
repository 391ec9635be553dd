"""Timestamps as Datadog accepts them, normalised to integer nanoseconds since the epoch."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Final

from pydantic_core import PydanticCustomError

# Datadog infers the unit from the magnitude (seconds, milliseconds or nanoseconds).
_SECONDS_BELOW: Final = 10**11  # year 5138 in seconds, 1973 in milliseconds
_MILLIS_BELOW: Final = 10**14  # year 5138 in milliseconds
_NANOS_FROM: Final = 10**17  # 1973 in nanoseconds; between the two lies microseconds
_INT64_MAX: Final = 2**63 - 1
_MAX_DIGITS: Final = len(str(_INT64_MAX))
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _error(reason: str) -> PydanticCustomError:
    return PydanticCustomError("timestamp", reason)


def _from_int(value: int) -> int:
    if value <= 0:
        raise _error("must be a positive Unix timestamp")
    if value < _SECONDS_BELOW:
        return value * 1_000_000_000
    if value < _MILLIS_BELOW:
        return value * 1_000_000
    if value < _NANOS_FROM:
        raise _error(
            "looks like microseconds; Datadog accepts seconds, milliseconds or nanoseconds"
        )
    if value > _INT64_MAX:
        raise _error("is too large for a 64-bit nanosecond timestamp")
    return value


def _from_datetime(value: datetime) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise _error("has no timezone; add one (e.g. Z or +00:00) so the instant is unambiguous")
    micros = (value - _EPOCH) // timedelta(microseconds=1)
    return _from_int(micros * 1_000) if micros > 0 else _from_int(0)


def to_nanoseconds(value: object) -> int:
    """Return ``value`` as integer nanoseconds since the Unix epoch.

    Accepts an int (seconds, milliseconds or nanoseconds, inferred from the magnitude as
    Datadog does), a float of seconds, a timezone-aware ``datetime``, or a string holding an
    ISO-8601 instant with a timezone or an integer. Raises a ``PydanticCustomError`` whose
    message says what is wrong, so that pydantic reports it under the field's name.
    """
    if isinstance(value, bool):
        raise _error("must be a timestamp, not a boolean")
    if isinstance(value, int):
        return _from_int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value >= _SECONDS_BELOW:
            raise _error(
                "a float is read as seconds; send milliseconds or nanoseconds as an integer"
            )
        return _from_int(round(value * 1_000_000_000)) if value > 0 else _from_int(0)
    if isinstance(value, datetime):
        return _from_datetime(value)
    if isinstance(value, str):
        text = value.strip()
        # isdigit() alone also takes other scripts' digits and superscripts ("²").
        if text.isascii() and text.isdigit():
            if len(text.lstrip("0")) > _MAX_DIGITS:
                raise _error("is too large for a 64-bit nanosecond timestamp")
            return _from_int(int(text))
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise _error(
                "is not an ISO-8601 instant (e.g. 2026-11-23T10:15:00Z) "
                "nor an integer Unix timestamp"
            ) from None
        return _from_datetime(parsed)
    raise _error(
        "must be an integer Unix timestamp (s, ms or ns), an ISO-8601 string or a datetime"
    )
