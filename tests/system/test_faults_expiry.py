"""Expiry loses nothing and regresses nothing: the retention and tombstone chaos scenarios,
smaller, with real worker processes, real Redis and the stand-in API.
"""

from __future__ import annotations

import pytest

from bench import chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_key_refused_longer_than_the_retention_loses_nothing(redis_url: str) -> None:
    """Key refused past the retention, then fixed: each incident delivered or dead-lettered."""
    result = chaos.retention(redis_url, count=100, orphans=10, deleted=5, refused_for_s=3.0)
    assert result.facts["vanished"] == 0
    assert result.lost == 0
    assert result.delivered == 95
    assert result.facts["orphans_dead"] == 10
    assert result.facts["missing_dead"] == 5
    assert result.facts["dead_letters"] == 15


def test_late_duplicate_starts_after_expiry_regress_nothing(redis_url: str) -> None:
    """Finished incidents expire, their starts come again: no regression, no wasted request."""
    result = chaos.tombstone(redis_url, count=100)
    assert result.facts["regressions"] == 0
    assert result.lost == 0
    assert result.facts["late_requests"] == result.facts["changed"] == 10
