"""Pure gate policy: what a batch of answers tells the whole fleet."""

from __future__ import annotations

import httpx

from workers.delivery.gate import (
    DEFAULT_RATE_LIMIT_WAIT_S,
    REASON_AUTH,
    REASON_RATE_LIMIT,
    Budget,
    GateUpdate,
    budget_of,
    gate_update,
)
from workers.delivery.records import Attempt

HEADERS = {
    "X-RateLimit-Limit": "100",
    "X-RateLimit-Period": "60",
    "X-RateLimit-Remaining": "40",
    "X-RateLimit-Reset": "12",
}


def answer(status: int | None, **headers: str) -> Attempt:
    return Attempt(status, httpx.Headers(headers), "", None if status else "ConnectError")


def test_nothing_to_say_without_answers() -> None:
    """No answers: nothing changes."""
    assert gate_update([], auth_pause_s=60) == GateUpdate()


def test_429_closes_until_reset() -> None:
    """A 429 closes the gate for X-RateLimit-Reset seconds."""
    update = gate_update([answer(429, **{"X-RateLimit-Reset": "7, 7"})], auth_pause_s=60)
    assert (update.close_ms, update.close_reason) == (7_000, REASON_RATE_LIMIT)


def test_429_without_headers_falls_back() -> None:
    """Without usable headers a 429 still closes the gate, for a default wait."""
    update = gate_update([answer(429)], auth_pause_s=60)
    assert update.close_ms == DEFAULT_RATE_LIMIT_WAIT_S * 1000


def test_longest_429_of_a_batch_wins() -> None:
    """Several 429s in one batch close the gate for the longest of their waits."""
    update = gate_update(
        [answer(429, **{"X-RateLimit-Reset": "3"}), answer(429, **{"X-RateLimit-Reset": "9"})],
        auth_pause_s=60,
    )
    assert update.close_ms == 9_000


def test_refused_key_wins_over_rate_limit() -> None:
    """A 403 in the batch closes for the auth pause, whatever else was seen."""
    update = gate_update(
        [answer(429, **{"X-RateLimit-Reset": "900"}), answer(403)], auth_pause_s=60
    )
    assert (update.close_ms, update.close_reason) == (60_000, REASON_AUTH)
    assert "refused the API key" in update.close_detail


def test_budget_is_the_smallest_remaining() -> None:
    """In-flight answers arrive in any order: the smallest remaining count is kept."""
    update = gate_update(
        [answer(202, **HEADERS), answer(202, **{**HEADERS, "X-RateLimit-Remaining": "38"})],
        auth_pause_s=60,
    )
    assert update.budget == Budget(limit=100, remaining=38, reset_ms=12_000, period_ms=60_000)
    assert not update.unlimited


def test_answers_without_headers_mean_no_announced_limit() -> None:
    """A 2xx without X-RateLimit-* says the API announces no limit."""
    assert gate_update([answer(202)], auth_pause_s=60).unlimited
    assert not gate_update([answer(503)], auth_pause_s=60).unlimited


def test_any_finished_attempt_ends_a_probe() -> None:
    """Even a network error ends the probe, so the next one can go."""
    assert gate_update([answer(None)], auth_pause_s=60).answered


def test_a_reset_counts_from_when_the_answer_came() -> None:
    """Settled 2.5 s after it came, an answer's window ends 2.5 s sooner."""
    came = Attempt(202, httpx.Headers(HEADERS), "", received_at=100.0)
    assert budget_of(came) == Budget(100, 40, 12_000, 60_000)  # no clock: as announced
    assert budget_of(came, now_s=102.5) == Budget(100, 40, 9_500, 60_000)
    assert budget_of(came, now_s=130.0) == Budget(100, 40, -18_000, 60_000)  # ended 18 s ago
    update = gate_update([came], auth_pause_s=60, now_s=102.5)
    assert update.budget == Budget(100, 40, 9_500, 60_000)
    over = gate_update([came], auth_pause_s=60, now_s=130.0)
    assert (over.budget, over.unlimited) == (None, False)  # a window over is no budget
    unknown = Attempt(202, httpx.Headers(HEADERS), "")  # no receipt time: as announced
    assert budget_of(unknown, now_s=130.0) == Budget(100, 40, 12_000, 60_000)


def _came(remaining: int, reset_s: int, at_s: float, status: int = 202) -> Attempt:
    headers = {
        **HEADERS,
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset_s),
    }
    return Attempt(status, httpx.Headers(headers), "", received_at=at_s)


def test_a_batch_across_a_reset_keeps_the_later_windows_count() -> None:
    """Answers from both sides of a reset in one batch: the new window's count, not the
    old window's 0 (its rollover would grant the whole limit in a window being spent)."""
    update = gate_update(
        [_came(0, 1, at_s=100.0), _came(37, 60, at_s=100.25), _came(39, 59, at_s=100.375)],
        auth_pause_s=60,
        now_s=100.5,
    )
    assert update.budget == Budget(100, 37, 59_750, 60_000)


def test_a_429_settled_late_closes_only_until_its_reset() -> None:
    """Counted from when it came: past its reset it closes nothing; before, the rest."""
    assert (
        gate_update([_came(0, 2, at_s=100.0, status=429)], auth_pause_s=60, now_s=110.0).close_ms
        == 0
    )
    late = gate_update([_came(0, 2, at_s=100.0, status=429)], auth_pause_s=60, now_s=101.5)
    assert (late.close_ms, late.close_reason) == (500, REASON_RATE_LIMIT)


def test_broken_budget_headers_are_ignored() -> None:
    """Incomplete or absurd headers give no budget rather than a wrong one."""
    assert budget_of(answer(202, **{"X-RateLimit-Limit": "10"})) is None
    assert budget_of(answer(202, **{**HEADERS, "X-RateLimit-Limit": "0"})) is None
    assert budget_of(answer(202, **{**HEADERS, "X-RateLimit-Remaining": "-1"})) is None
    capped = budget_of(answer(202, **{**HEADERS, "X-RateLimit-Remaining": "500"}))
    assert capped is not None
    assert capped.remaining == 100


def test_absurd_numbers_in_budget_headers_are_ignored_not_fatal() -> None:
    """inf, nan or words in X-RateLimit-* give no budget; settling never crashes on them."""
    for bad in ("inf", "nan", "-inf", "lots"):
        headers = {**HEADERS, "X-RateLimit-Limit": bad}
        assert budget_of(answer(202, **headers)) is None
        assert gate_update([answer(202, **headers)], auth_pause_s=60).budget is None
    duplicated = budget_of(answer(202, **{**HEADERS, "X-RateLimit-Remaining": "38, 38"}))
    assert duplicated is not None
    assert duplicated.remaining == 38
