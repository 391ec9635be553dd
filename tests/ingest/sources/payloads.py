"""The published webhook examples of tests/data/sources, loaded fresh for each test."""

from __future__ import annotations

import calendar
import json
from pathlib import Path
from typing import Any

SOURCES = Path(__file__).resolve().parents[2] / "data" / "sources"


def load(name: str) -> Any:
    """The example ``name`` (see SOURCES.md), parsed anew: a test may edit its copy."""
    return json.loads((SOURCES / name).read_text(encoding="utf-8"))


def utc_ns(*when: int, micros: int = 0) -> int:
    """Nanoseconds since the epoch of the UTC time ``year, month, day, hour, minute, second``;
    computed apart from the code under test, so an expected time is not the mapping's own."""
    return calendar.timegm((*when, 0, 0, 0)[:9]) * 1_000_000_000 + micros * 1_000
