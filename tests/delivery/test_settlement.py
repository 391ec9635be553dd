"""Pure settlement policy: what happens to a claim before sending and after its answer."""

from __future__ import annotations

import json
from typing import Any

import httpx

from workers.delivery.backoff import BackoffPolicy
from workers.delivery.operations import ApiRequest, Step
from workers.delivery.records import Attempt, Claim, Settlement, Verdict
from workers.delivery.settlement import SettlementPolicy, before_sending, from_answer

POST = ApiRequest(Step.POST, "POST", "/api/v2/dora/failure", None, "digest")


def settled_early(claim: Claim, policy: SettlementPolicy) -> Settlement:
    """The settlement ``before_sending`` makes without a request (fails if it sends one)."""
    decision = before_sending(claim, policy)
    assert isinstance(decision, Settlement), f"a request would be sent: {decision}"
    return decision


NOW = 1_795_000_000_000
POLICY = SettlementPolicy(
    backoff=BackoffPolicy(1.0, 60.0), orphan_wait_ms=60_000, max_age_ms=3_600_000, auth_pause_s=30.0
)
COMPLETE = {"id": "incident-0000000001", "started_at": 1_700_000_000_000_000_000, "team": "t"}


def claim(**changes: Any) -> Claim:
    fields: dict[str, Any] = {
        "incident_id": "incident-0000000001",
        "version": 2,
        "sent_version": 1,
        "attempt": 0,
        "first_seen_ms": NOW - 1_000,
        "failing_since_ms": None,
        "attributes": COMPLETE,
        "claimed_at_ms": NOW,
    }
    return Claim(**{**fields, **changes})


def answer(status: int | None) -> Attempt:
    return Attempt(status, httpx.Headers(), "body", None if status else "ConnectError: x")


def test_complete_new_version_is_sent() -> None:
    """A complete state newer than the delivered one goes out."""
    assert isinstance(before_sending(claim(), POLICY), ApiRequest)


def test_already_delivered_version_is_settled_unsent() -> None:
    """A claim that came back after its version was delivered costs no request."""
    settlement = settled_early(claim(version=1), POLICY)
    assert settlement is not None
    assert settlement.verdict is Verdict.DELIVERED


def test_unreadable_state_is_dead_without_a_request_naming_the_field() -> None:
    """A claim whose stored state did not parse is a dead letter, even if its version was sent."""
    problem = "field 'attempt' = '1.5' does not parse"
    settled = settled_early(claim(version=1, problem=problem), POLICY)
    assert settled is not None
    assert settled.verdict is Verdict.DEAD
    assert "'attempt'" in settled.reason
    assert settled.sent_at_ms == 0


def test_finish_alone_waits_the_rest_of_the_orphan_wait() -> None:
    """A finish without its start waits for it, counted from when it was first seen."""
    lonely = claim(attributes={"id": "incident-0000000001", "finished_at": 5})
    settlement = settled_early(lonely, POLICY)
    assert settlement is not None
    assert (settlement.verdict, settlement.delay_ms) == (Verdict.WAIT, 59_000)


def test_finish_alone_past_the_wait_is_dead() -> None:
    """Past the orphan wait, a finish alone becomes a dead letter saying why."""
    lonely = claim(
        attributes={"id": "incident-0000000001", "finished_at": 5}, first_seen_ms=NOW - 60_000
    )
    settlement = settled_early(lonely, POLICY)
    assert settlement is not None
    assert settlement.verdict is Verdict.DEAD
    assert "never arrived" in settlement.reason


def test_merged_state_breaking_a_rule_is_dead_unsent() -> None:
    """A finish earlier than the stored start never reaches Datadog."""
    broken = claim(attributes={**COMPLETE, "finished_at": 1})
    settlement = settled_early(broken, POLICY)
    assert settlement is not None
    assert settlement.verdict is Verdict.DEAD
    assert "finished_at: is before started_at" in settlement.reason


def test_answers_settle_by_status() -> None:
    """2xx delivers, 400 dead-letters with the body, 503 retries with backoff."""
    assert from_answer(claim(), POST, answer(202), POLICY).verdict is Verdict.DELIVERED
    dead = from_answer(claim(), POST, answer(400), POLICY)
    assert dead.verdict is Verdict.DEAD
    assert json.loads(dead.detail) == {
        "status": 400,
        "response": "body",
        "attributes": COMPLETE,
        "attempts": 1,
        "request": "POST /api/v2/dora/failure",
    }
    retry = from_answer(claim(attempt=2), POST, answer(503), POLICY, uniform=lambda: 1.0)
    assert (retry.verdict, retry.delay_ms) == (Verdict.RETRY, 4_000)


def test_refused_key_waits_for_the_auth_pause_and_never_expires() -> None:
    """A 403 retries after the auth pause, however old the failure."""
    ancient = claim(failing_since_ms=NOW - 10 * 3_600_000, attempt=500)
    settlement = from_answer(ancient, POST, answer(403), POLICY)
    assert (settlement.verdict, settlement.delay_ms) == (Verdict.RETRY, 30_000)


def test_failing_past_max_age_expires() -> None:
    """An incident failing longer than FORWARDER_MAX_AGE_S is dead, with its attempts."""
    old = claim(failing_since_ms=NOW - 3_600_000, attempt=41)
    settlement = from_answer(old, POST, answer(None), POLICY)
    assert settlement.verdict is Verdict.DEAD
    assert settlement.reason.startswith("expired after 42 attempts over 1.0 h")
    assert "last error: network error: ConnectError: x" in settlement.reason
    young = claim(failing_since_ms=NOW - 3_599_999, attempt=41)
    assert from_answer(young, POST, answer(None), POLICY).verdict is Verdict.RETRY
