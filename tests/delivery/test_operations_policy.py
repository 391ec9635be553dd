"""Pure policy of PATCH and DELETE: what a state owes, in which order, and how answers settle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from forwarder.protocol import KIND_DEPLOYMENT, StateField, state_id
from workers.delivery.gate import gate_update
from workers.delivery.operations import (
    ApiRequest,
    Step,
    owed_requests,
    split_state,
    state_digest,
)
from workers.delivery.records import Attempt, Claim, Settlement, Verdict
from workers.delivery.settlement import SettlementPolicy, before_sending, from_answer

ID = "deployment-policy-0001"
STATE = state_id(KIND_DEPLOYMENT, ID)
NOW = 1_800_000_000_000
POST = {
    "id": ID,
    "service": "checkout",
    "started_at": 1_700_000_000_000_000_000,
    "finished_at": 1_700_000_060_000_000_000,
}
PATCH = {"patch.change_failure": True, "patch.remediation": {"id": "x", "type": "rollback"}}
DELETE = {"delete": "001700000000000-0000000003"}
POLICY = SettlementPolicy()
BY_VERSION_STATE = state_id("deployment_patch_by_version", "dora-abc")
BY_VERSION = {
    "patch.service": "checkout",
    "patch.env": "prod",
    "patch.version": "v1",
    "patch.change_failure": True,
}


def claim(attributes: dict[str, Any], **changes: Any) -> Claim:
    fields: dict[str, Any] = {
        "incident_id": STATE,
        "version": 2,
        "sent_version": 0,
        "attempt": 0,
        "first_seen_ms": NOW,
        "failing_since_ms": None,
        "attributes": attributes,
        "claimed_at_ms": NOW,
    }
    return Claim(**{**fields, **changes})


def steps(attributes: dict[str, Any], done: Mapping[str, str] | None = None) -> list[str]:
    return [f"{r.method} {r.path}" for r in owed_requests(STATE, attributes, done or {})]


def test_a_state_owes_delete_then_post_then_patch() -> None:
    """Whatever the fields' order, the DELETE goes first, the PATCH last."""
    assert steps({**PATCH, **POST, **DELETE}) == [
        f"DELETE /api/v2/dora/deployment/{ID}",
        "POST /api/v2/dora/deployment",
        f"PATCH /api/v2/dora/deployments/{ID}",
    ]
    owed = owed_requests(STATE, {**POST, **PATCH}, {})
    assert [r.more for r in owed] == [True, False]
    assert owed[1].body == {
        "data": {
            "id": ID,
            "type": "dora_deployment_patch_request",
            "attributes": {"change_failure": True, "remediation": {"id": "x", "type": "rollback"}},
        }
    }


def test_what_datadog_accepted_is_not_owed_again() -> None:
    """done:post equal to the POST's digest: only the PATCH is owed; all done: nothing."""
    done: dict[str, str] = {StateField.DONE_POST: state_digest(POST)}
    assert steps({**POST, **PATCH}, done) == [f"PATCH /api/v2/dora/deployments/{ID}"]
    done[StateField.DONE_PATCH] = state_digest(split_state(PATCH).patch)
    assert steps({**POST, **PATCH}, done) == []
    done[StateField.DONE_DELETE] = DELETE["delete"]
    assert steps({**DELETE, **POST}, done) == []


def test_a_patch_by_version_names_its_deployment_in_the_body() -> None:
    state, attributes = BY_VERSION_STATE, BY_VERSION
    (request,) = owed_requests(state, attributes, {})
    assert (request.method, request.path) == ("PATCH", "/api/v2/dora/deployments")
    assert request.body is not None
    assert "id" not in request.body["data"]


def test_without_an_application_key_a_patch_waits_and_a_post_goes() -> None:
    """No key: the PATCH waits (kept, marked as waiting for the key); a POST is sent."""
    no_key = SettlementPolicy(has_app_key=False, auth_pause_s=30.0)
    done: dict[str, str] = {StateField.DONE_POST: state_digest(POST)}
    waiting = before_sending(claim({**POST, **PATCH}, done=done), no_key)
    assert isinstance(waiting, Settlement)
    assert (waiting.verdict, waiting.app_key_wait, waiting.delay_ms) == (Verdict.WAIT, True, 30_000)
    assert "DD_APP_KEY is not set" in waiting.reason
    post = before_sending(claim({**POST, **PATCH}), no_key)
    assert isinstance(post, ApiRequest)
    assert post.step is Step.POST


def test_a_paused_application_key_holds_patches_until_the_pause_ends() -> None:
    paused = claim({**PATCH}, app_key_paused_until_ms=NOW + 5_000)
    waiting = before_sending(paused, POLICY)
    assert isinstance(waiting, Settlement)
    assert (waiting.verdict, waiting.delay_ms, waiting.app_key_wait) == (Verdict.WAIT, 5_000, True)


def test_a_refused_application_key_waits_and_pauses_only_patch_and_delete() -> None:
    """403 to a PATCH: a wait (never a dead letter, no attempt counted), and the gate update
    pauses PATCH and DELETE instead of closing the fleet's gate."""
    request = owed_requests(STATE, PATCH, {})[0]
    refused = Attempt(403, {}, '{"errors":["Forbidden"]}', app_key=True)
    settled = from_answer(claim(PATCH, attempt=50), request, refused, POLICY)
    assert (settled.verdict, settled.app_key_wait) == (Verdict.WAIT, True)
    update = gate_update([refused], auth_pause_s=60.0)
    assert (update.close_ms, update.app_key_close_ms) == (0, 60_000)
    post_refused = gate_update([Attempt(403, {}, "", app_key=False)], auth_pause_s=60.0)
    assert (post_refused.close_ms, post_refused.app_key_close_ms) == (60_000, 0)


@pytest.mark.parametrize(
    ("waited_ms", "verdict"),
    [(0, Verdict.RETRY), (3_599_999, Verdict.RETRY), (3_600_000, Verdict.DEAD)],
)
def test_a_patch_answered_404_is_retried_for_the_patch_wait(
    waited_ms: int, verdict: Verdict
) -> None:
    request = owed_requests(STATE, PATCH, {})[0]
    failing = claim(PATCH, failing_since_ms=NOW - waited_ms, attempt=3)
    settled = from_answer(failing, request, Attempt(404, {}, "{}", app_key=True), POLICY)
    assert settled.verdict is verdict
    assert ID in settled.reason
    assert "FORWARDER_PATCH_WAIT_S" in settled.reason
    assert not settled.outage, "a 404 is no outage: the breaker must not count it"


def test_a_delete_answered_404_is_done() -> None:
    request = owed_requests(STATE, DELETE, {})[0]
    settled = from_answer(claim(DELETE), request, Attempt(404, {}, "{}", app_key=True), POLICY)
    assert (settled.verdict, settled.step, settled.step_done) == (
        Verdict.DELIVERED,
        "delete",
        DELETE["delete"],
    )


def test_a_delivered_step_with_more_owed_says_so() -> None:
    request = owed_requests(STATE, {**POST, **PATCH}, {})[0]
    settled = from_answer(claim({**POST, **PATCH}), request, Attempt(202, {}, "{}"), POLICY)
    assert (settled.verdict, settled.step, settled.more) == (Verdict.DELIVERED, "post", True)
    assert settled.step_done == state_digest(POST)


def test_a_resend_after_doubt_with_several_steps_forgets_and_starts_over() -> None:
    """Claimed at or after doubt_until with two steps owed: no request, but a WAIT that
    forgets what Datadog accepted, so that both go again in order."""
    done = {
        StateField.DONE_POST: state_digest(POST),
        StateField.DONE_PATCH: state_digest(split_state(PATCH).patch),
    }
    doubtful = claim({**POST, **PATCH}, sent_version=2, done=done, doubt_until_ms=NOW)
    settled = before_sending(doubtful, POLICY)
    assert isinstance(settled, Settlement)
    assert (settled.verdict, settled.forget, settled.delay_ms) == (Verdict.WAIT, True, 0)


def test_a_hand_written_id_that_cannot_go_into_a_path_is_a_dead_letter() -> None:
    bad = claim(DELETE, incident_id=state_id(KIND_DEPLOYMENT, "has space/and slash"))
    settled = before_sending(bad, POLICY)
    assert isinstance(settled, Settlement)
    assert settled.verdict is Verdict.DEAD
    assert "cannot go into Datadog's path" in settled.reason


def test_a_same_second_deployment_is_a_dead_letter_naming_both() -> None:
    clash = claim(POST, same_second_as="deployment-holder-0001")
    settled = before_sending(clash, POLICY)
    assert isinstance(settled, Settlement)
    assert settled.verdict is Verdict.DEAD
    assert ID in settled.reason
    assert "deployment-holder-0001" in settled.reason


def test_patch_by_version_is_a_dead_letter_where_it_is_not_enabled() -> None:
    state, attributes = BY_VERSION_STATE, BY_VERSION
    settled = before_sending(claim(attributes, incident_id=state), POLICY)
    assert isinstance(settled, Settlement)
    assert settled.verdict is Verdict.DEAD
    assert "FORWARDER_PATCH_BY_VERSION" in settled.reason
    allowed = before_sending(
        claim(attributes, incident_id=state), SettlementPolicy(patch_by_version=True)
    )
    assert isinstance(allowed, ApiRequest)
