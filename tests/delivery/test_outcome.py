"""Pure outcome policy: what each status, header and failure means for an incident."""

from __future__ import annotations

import httpx
import pytest

from workers.delivery.backoff import BackoffPolicy
from workers.delivery.outcome import decide
from workers.delivery.ratelimit import MAX_WAIT_S, retry_after_s
from workers.delivery.records import Attempt, Verdict

POLICY = BackoffPolicy(base_s=1.0, max_s=60.0)


def verdict(status: int | None, **headers: str) -> Verdict:
    attempt = Attempt(status, httpx.Headers(headers), "", None if status else "ConnectError")
    return decide(attempt, failures_so_far=0, backoff=POLICY, uniform=lambda: 0.5).verdict


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (400, Verdict.DEAD),
        (404, Verdict.DEAD),
        (413, Verdict.DEAD),
        (422, Verdict.DEAD),
        (501, Verdict.DEAD),
        (401, Verdict.RETRY),
        (403, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (None, Verdict.RETRY),
    ],
)
def test_classification_by_status(status: int | None, expected: Verdict) -> None:
    """2xx delivers; 4xx but auth/408/429 dead-letters; 5xx but 501 and errors retry."""
    assert verdict(status) is expected


def test_auth_failure_keeps_the_event_and_says_what_to_fix() -> None:
    """401/403 never dead-letter: the events wait for a working key."""
    decision = decide(Attempt(403, httpx.Headers(), ""), failures_so_far=0, backoff=POLICY)
    assert decision.verdict is Verdict.RETRY
    assert "DD_API_KEY" in decision.reason


def test_rate_limit_waits_for_the_reset() -> None:
    """A 429 is retried no sooner than X-RateLimit-Reset seconds."""
    attempt = Attempt(429, httpx.Headers({"X-RateLimit-Reset": "42"}), "")
    decision = decide(attempt, failures_so_far=0, backoff=POLICY, uniform=lambda: 0.0)
    assert decision.delay_s == 42


def test_network_error_reason_names_the_error() -> None:
    """A transport failure is retried and its reason kept."""
    attempt = Attempt(None, {}, "", "ConnectError: refused")
    decision = decide(attempt, failures_so_far=3, backoff=POLICY, uniform=lambda: 1.0)
    assert decision.reason == "network error: ConnectError: refused"
    assert decision.delay_s == 8.0


@pytest.mark.parametrize(
    ("attempt", "uniform", "expected"),
    [
        (0, 1.0, 1.0),
        (1, 1.0, 2.0),
        (5, 1.0, 32.0),
        (6, 1.0, 60.0),
        (500, 1.0, 60.0),
        (3, 0.0, 0.0),
        (3, 0.25, 2.0),
    ],
)
def test_backoff_is_capped_full_jitter(attempt: int, uniform: float, expected: float) -> None:
    """Delay is uniform in [0, min(max, base * 2**attempt)]."""
    assert POLICY.delay_s(attempt, lambda: uniform) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-RateLimit-Reset": "7"}, 7.0),
        ({"X-RateLimit-Reset": "7, 7"}, 7.0),
        ({"X-RateLimit-Reset": "3, 9"}, 9.0),
        ({"X-RateLimit-Reset": "soon", "X-RateLimit-Period": "60"}, 60.0),
        ({"X-RateLimit-Period": "10"}, 10.0),
        ({"X-RateLimit-Reset": "-4"}, None),
        ({"X-RateLimit-Reset": "inf"}, None),
        ({"X-RateLimit-Reset": "99999999"}, MAX_WAIT_S),
        ({}, None),
    ],
)
def test_reset_header_parsed_defensively(headers: dict[str, str], expected: float | None) -> None:
    """Duplicated, missing, negative or absurd reset values never break the wait."""
    assert retry_after_s(httpx.Headers(headers)) == expected
