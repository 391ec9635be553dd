"""Timestamps in every form Datadog accepts, normalised to integer nanoseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic_core import PydanticCustomError

from forwarder._timestamps import to_nanoseconds

NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000, NS),
        (1_700_000_000_123, NS + 123_000_000),
        (NS + 7, NS + 7),
        (1_700_000_000.5, NS + 500_000_000),
        ("1700000000", NS),
        ("2023-11-14T22:13:20Z", NS),
        ("2023-11-14T23:13:20+01:00", NS),
        ("2023-11-14T22:13:20.25Z", NS + 250_000_000),
        (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), NS),
        (datetime(2023, 11, 14, 17, 13, 20, tzinfo=timezone(timedelta(hours=-5))), NS),
    ],
)
def test_accepted_forms(value: object, expected: int) -> None:
    """Seconds, ms, ns, float seconds, ISO strings and aware datetimes give the same instant."""
    assert to_nanoseconds(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "positive"),
        (-5, "positive"),
        (True, "boolean"),
        (1_700_000_000_000_000, "microseconds"),
        (2**64, "too large"),
        (1.7e12, "float is read as seconds"),
        (float("nan"), "float is read as seconds"),
        ("2023-11-14T22:13:20", "no timezone"),
        (datetime(2023, 11, 14), "no timezone"),
        ("yesterday", "ISO-8601"),
        ([1], "integer Unix timestamp"),
        (None, "integer Unix timestamp"),
    ],
)
def test_rejected_forms(value: object, reason: str) -> None:
    """Ambiguous or impossible values are refused with a reason a user can act on."""
    with pytest.raises(PydanticCustomError, match=reason):
        to_nanoseconds(value)
