"""Hostile input under faults: the poison and hostile-header chaos scenarios, smaller, asserted.

Real worker processes, real Redis, the local stand-in API; each scenario is bounded in time.
"""

from __future__ import annotations

import pytest

from bench import chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_reclaim_after_a_worker_died_holding_the_hostile_corpus() -> None:
    """A worker SIGKILLed holding every poison case ahead of good incidents: the next worker
    delivers every good one, dead-letters each poison entry with its reason, leaves none pending."""
    result = chaos.poison_dead_consumer(count=100, page=5)
    assert result.facts["good_delivered"] == 100
    assert result.facts["dead_letters"] == result.facts["poison"]
    assert result.facts["letters_with_reason"] == result.facts["poison"]
    assert result.facts["pending_left"] == 0
    assert result.lost == 0


def test_absurd_rate_limit_headers_on_every_answer_cost_nothing(redis_url: str) -> None:
    """1e17, inf, nan, negative, '7, 7, 1e300' and 4 KB X-RateLimit-* values on every 202:
    every incident arrives within a bounded time, at most two requests each (start, finish)."""
    result = chaos.hostile_headers(redis_url, count=150, timeout_s=60)
    assert result.lost == 0
    assert result.delivered == 150
    assert result.facts["requests_per_incident"] <= 2
