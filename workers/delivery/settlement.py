"""Pure policy: how a claimed state is settled, before its request is sent or from its answer.

A claim owes Datadog requests (``operations.owed_requests``); ``before_sending`` picks the
first one, or settles the claim without a request (nothing owed, a finish waiting for its
start, an invalid state, a PATCH or DELETE waiting for the application key); ``from_answer``
settles it from what that request produced.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from forwarder import InvalidEventError
from forwarder.entry import to_event
from forwarder.protocol import (
    KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_PATCH,
    KIND_DEPLOYMENT_PATCH_BY_VERSION,
    KIND_FAILURE,
    STATE_DEPLOYMENT_VERSION,
    TARGET_ID_PATTERN,
    StateField,
    parse_state_id,
)
from workers.delivery.backoff import BackoffPolicy
from workers.delivery.breaker import is_outage
from workers.delivery.fold import is_complete
from workers.delivery.operations import ApiRequest, Step, owed_requests, split_state, state_digest
from workers.delivery.outcome import AUTH_STATUSES, decide
from workers.delivery.records import MAX_BODY_KEPT, Attempt, Claim, Settlement, Verdict

_NOUNS: Final = {
    KIND_FAILURE: "incident",
    KIND_DEPLOYMENT: "deployment",
    STATE_DEPLOYMENT_VERSION: "deployment (by version)",
}
NOT_FOUND: Final = 404

__all__ = ["SettlementPolicy", "before_sending", "from_answer", "state_digest"]


@dataclass(frozen=True, slots=True)
class SettlementPolicy:
    """The limits that decide between retrying, waiting and giving up."""

    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    orphan_wait_ms: int = 6 * 3_600_000
    max_age_ms: int = 3 * 86_400_000
    auth_pause_s: float = 60.0
    has_app_key: bool = True
    """DD_APP_KEY is set: PATCH and DELETE can be sent (otherwise they wait, kept)."""
    patch_wait_ms: int = 3_600_000
    """How long a PATCH that Datadog answers 404 (the deployment is not known yet) is
    retried before it is dead-lettered (``FORWARDER_PATCH_WAIT_S``)."""
    patch_by_version: bool = False
    """``FORWARDER_PATCH_BY_VERSION``: send Datadog's preview PATCH by version."""


def _step_fields(request: ApiRequest | None) -> dict[str, Any]:
    if request is None:
        return {}
    return {"step": request.step, "step_done": request.done, "more": request.more}


def delivered(
    claim: Claim, reason: str = "", *, sent_at_ms: int = 0, request: ApiRequest | None = None
) -> Settlement:
    """``request`` (or, without one, the whole state) is what Datadog holds; ``sent_at_ms``:
    when the request went out."""
    return Settlement(
        claim.incident_id,
        claim.version,
        Verdict.DELIVERED,
        reason=reason,
        digest=state_digest(split_state(claim.attributes).post),
        sent_at_ms=sent_at_ms,
        **_step_fields(request),
    )


def dead_letter(
    claim: Claim,
    reason: str,
    attempt: Attempt | None = None,
    request: ApiRequest | None = None,
) -> Settlement:
    """A dead letter for ``claim``, with the request, the answer (if any) and the merged
    attributes."""
    detail = {
        "status": attempt.status if attempt else None,
        "response": attempt.body[:MAX_BODY_KEPT] if attempt else None,
        "attributes": claim.attributes,
        "attempts": claim.attempt + (1 if attempt else 0),
    }
    if request is not None:
        detail["request"] = f"{request.method} {request.path}"
    return Settlement(
        claim.incident_id,
        claim.version,
        Verdict.DEAD,
        reason=reason,
        detail=json.dumps(detail, separators=(",", ":")),
        sent_at_ms=claim.claimed_at_ms if attempt else 0,
        doubt=attempt.in_doubt if attempt else False,
        **_step_fields(request),
    )


def owes_resend(claim: Claim) -> bool:
    """Whether ``claim`` must be sent although its version was delivered.

    An earlier request whose fate was in doubt may have landed after that delivery; once it
    can no longer land (``doubt_until_ms``), one more send of the current version makes it
    the last to land.
    """
    return claim.doubt_until_ms is not None and claim.claimed_at_ms >= claim.doubt_until_ms


def before_sending(claim: Claim, policy: SettlementPolicy) -> Settlement | ApiRequest:
    """The request to send for ``claim``, or how to settle it without one.

    Without a request: already delivered (a lapsed lease came back), unless a resend is
    owed (``owes_resend``); nothing owed (every part is what Datadog accepted last, or what
    a finish record says it holds). A finish without its start: wait for it, or give up
    after the orphan wait. A merged state that breaks a rule, or a stored state the worker
    cannot read (``Claim.problem``): dead letter, without costing a request. A PATCH or
    DELETE without a usable application key: wait, kept, never dead-lettered for it.
    """
    if claim.problem is not None:
        return dead_letter(
            claim, f"stored state of {claim.incident_id} is unusable: {claim.problem}"
        )
    request = _first_owed(claim)
    if isinstance(request, Settlement):
        return request
    return (
        _unsendable(claim, request, policy) or _app_key_unusable(claim, request, policy) or request
    )


def _first_owed(claim: Claim) -> Settlement | ApiRequest:
    """The first request ``claim`` owes Datadog, or how to settle it if it owes none."""
    resend = owes_resend(claim)
    if claim.version <= claim.sent_version and not resend:
        return delivered(claim, "sent")
    if resend:
        # Requests in doubt may have landed after later ones: the state's requests go again,
        # every one, after they can no longer land.
        owed = owed_requests(claim.incident_id, claim.attributes, {})
        if len(owed) > 1:
            return Settlement(
                claim.incident_id,
                claim.version,
                Verdict.WAIT,
                reason="requests in doubt may have landed out of order: sending all again",
                forget=True,
            )
    else:
        done = dict(claim.done)
        if claim.remembered_digest is not None:
            done[StateField.DONE_POST] = claim.remembered_digest
        owed = owed_requests(claim.incident_id, claim.attributes, done)
    if not owed:
        reason = "Datadog holds this state already" + (
            " (finish record)" if claim.remembered_digest else ""
        )
        return delivered(claim, reason)
    return owed[0]


def _app_key_unusable(
    claim: Claim, request: ApiRequest, policy: SettlementPolicy
) -> Settlement | None:
    """A wait for a PATCH or DELETE without a usable application key, or None."""
    if not request.needs_app_key:
        return None
    if not policy.has_app_key:
        return _wait_for_app_key(
            claim, request, int(policy.auth_pause_s * 1000), "DD_APP_KEY is not set"
        )
    if claim.app_key_paused_until_ms > claim.claimed_at_ms:
        return _wait_for_app_key(
            claim,
            request,
            claim.app_key_paused_until_ms - claim.claimed_at_ms,
            "Datadog refused the application key",
        )
    return None


def _unsendable(claim: Claim, request: ApiRequest, policy: SettlementPolicy) -> Settlement | None:
    """How to settle a request that must not go out (incomplete, invalid), or None."""
    if request.step is Step.POST:
        return _post_unsendable(claim, request, policy)
    kind, event_id = parse_state_id(claim.incident_id)
    if kind != STATE_DEPLOYMENT_VERSION and not TARGET_ID_PATTERN.fullmatch(event_id):
        # Only a state written by hand gets here (fold takes checked ids): its id would go
        # into the request's path as it is.
        return dead_letter(
            claim,
            f"{request.method} of {claim.incident_id!r}: the id is not 1-128 characters of "
            "A-Z, a-z, 0-9 and . _ : -, so it cannot go into Datadog's path",
            request=request,
        )
    if request.step is Step.PATCH:
        return _patch_unsendable(claim, request, policy)
    return None


def _post_unsendable(
    claim: Claim, request: ApiRequest, policy: SettlementPolicy
) -> Settlement | None:
    post = split_state(claim.attributes).post
    if claim.same_second_as is not None:
        _, event_id = parse_state_id(claim.incident_id)
        second = int(post.get("started_at", 0)) // 1_000_000_000
        return dead_letter(
            claim,
            f"deployment {event_id} starts in the same second ({second}) as deployment "
            f"{claim.same_second_as} of the same service and env, which was published first: "
            "Datadog keeps one deployment per service per second, so sending this one would "
            "silently overwrite the other. Publish it again with its true start time, or delete "
            "the other and replay this letter",
            request=request,
        )
    if not is_complete(post):
        waited_ms = claim.claimed_at_ms - claim.first_seen_ms
        if waited_ms < policy.orphan_wait_ms:
            return Settlement(
                claim.incident_id,
                claim.version,
                Verdict.WAIT,
                delay_ms=policy.orphan_wait_ms - waited_ms,
                reason="finish waiting for its start",
            )
        return dead_letter(
            claim,
            f"a finish for incident {claim.incident_id} waited {waited_ms / 1000:.0f} s "
            "for its start, which never arrived (FORWARDER_ORPHAN_WAIT_S)",
            request=request,
        )
    try:
        to_event(post, claim.kind)
    except InvalidEventError as exc:
        noun = _NOUNS.get(claim.kind, claim.kind)
        return dead_letter(claim, f"merged {noun} is invalid: {exc}", request=request)
    return None


def _patch_unsendable(
    claim: Claim, request: ApiRequest, policy: SettlementPolicy
) -> Settlement | None:
    patch = split_state(claim.attributes).patch
    kind, event_id = parse_state_id(claim.incident_id)
    if kind == STATE_DEPLOYMENT_VERSION:
        if not policy.patch_by_version:
            return dead_letter(
                claim,
                "PATCH by version is a Datadog preview this worker does not send: set "
                "FORWARDER_PATCH_BY_VERSION=true on the workers, then replay this letter",
                request=request,
            )
        data, patch_kind = dict(patch), KIND_DEPLOYMENT_PATCH_BY_VERSION
    else:
        data, patch_kind = {**patch, "id": event_id}, KIND_DEPLOYMENT_PATCH
    try:
        to_event(data, patch_kind)
    except InvalidEventError as exc:
        return dead_letter(claim, f"merged PATCH is invalid: {exc}", request=request)
    return None


def _wait_for_app_key(
    claim: Claim, request: ApiRequest, delay_ms: int, why: str, *, sent_at_ms: int = 0
) -> Settlement:
    return Settlement(
        claim.incident_id,
        claim.version,
        Verdict.WAIT,
        delay_ms=max(1, delay_ms),
        reason=f"{request.method} waits for a usable application key: {why} (DD_APP_KEY)",
        sent_at_ms=sent_at_ms,
        app_key_wait=True,
    )


def from_answer(
    claim: Claim,
    request: ApiRequest,
    attempt: Attempt,
    policy: SettlementPolicy,
    uniform: Callable[[], float] = random.random,
) -> Settlement:
    """How to settle a claim from what its ``request`` produced."""
    special = _operation_answer(claim, request, attempt, policy, uniform)
    if special is not None:
        return special
    decision = decide(
        attempt, failures_so_far=claim.attempt, backoff=policy.backoff, uniform=uniform
    )
    if decision.verdict is Verdict.DEAD:
        return dead_letter(claim, decision.reason, attempt, request)
    if decision.verdict is Verdict.DELIVERED:
        return delivered(claim, sent_at_ms=claim.claimed_at_ms, request=request)
    if attempt.status in AUTH_STATUSES:
        # Never expires: the events wait for a working key, however long that takes.
        return _retry(claim, attempt, int(policy.auth_pause_s * 1000), decision.reason)
    age_ms = _failing_for_ms(claim)
    if age_ms >= policy.max_age_ms:
        return dead_letter(
            claim,
            f"expired after {claim.attempt + 1} attempts over {age_ms / 3_600_000:.1f} h "
            f"(FORWARDER_MAX_AGE_S); last error: {decision.reason}",
            attempt,
            request,
        )
    return _retry(claim, attempt, int(decision.delay_s * 1000), decision.reason)


def _operation_answer(
    claim: Claim,
    request: ApiRequest,
    attempt: Attempt,
    policy: SettlementPolicy,
    uniform: Callable[[], float],
) -> Settlement | None:
    """What answers mean for PATCH and DELETE alone (a refused application key, a 404)."""
    if attempt.status in AUTH_STATUSES and request.needs_app_key:
        # The API key may be fine (POSTs go on): the application key was refused. Kept,
        # never dead-lettered; the fleet's pause of PATCH and DELETE says when to try again.
        return _wait_for_app_key(
            claim,
            request,
            int(policy.auth_pause_s * 1000),
            f"Datadog refused it (HTTP {attempt.status})",
            sent_at_ms=claim.claimed_at_ms,
        )
    if attempt.status == NOT_FOUND and request.step is Step.DELETE:
        return delivered(
            claim,
            "already gone at Datadog (HTTP 404)",
            sent_at_ms=claim.claimed_at_ms,
            request=request,
        )
    if attempt.status == NOT_FOUND and request.step is Step.PATCH:
        return _patch_not_found(claim, request, attempt, policy, uniform)
    return None


def _failing_for_ms(claim: Claim) -> int:
    return 0 if claim.failing_since_ms is None else claim.claimed_at_ms - claim.failing_since_ms


def _patch_not_found(
    claim: Claim,
    request: ApiRequest,
    attempt: Attempt,
    policy: SettlementPolicy,
    uniform: Callable[[], float],
) -> Settlement:
    """A PATCH of a deployment Datadog does not know (yet): its ingestion lags, or the
    deployment is posted elsewhere later. Retried with backoff for the patch wait."""
    waited_ms = _failing_for_ms(claim)
    _, event_id = parse_state_id(claim.incident_id)
    if waited_ms >= policy.patch_wait_ms:
        return dead_letter(
            claim,
            f"Datadog does not know the deployment {event_id} this PATCH is for (HTTP 404), "
            f"after {claim.attempt + 1} attempts over {waited_ms / 1000:.0f} s "
            "(FORWARDER_PATCH_WAIT_S): was it ever posted, with this id?",
            attempt,
            request,
        )
    delay_ms = int(policy.backoff.delay_s(claim.attempt, uniform) * 1000)
    return _retry(
        claim,
        attempt,
        min(delay_ms, max(1, policy.patch_wait_ms - waited_ms)),
        f"Datadog does not know deployment {event_id} yet (HTTP 404); retrying for up to "
        f"{policy.patch_wait_ms / 1000:.0f} s (FORWARDER_PATCH_WAIT_S)",
    )


def _retry(claim: Claim, attempt: Attempt, delay_ms: int, reason: str) -> Settlement:
    """Try ``claim`` again in ``delay_ms``; its request went out at the claim's time.

    ``outage`` is False for 401/403 (the API answered), so a refused key keeps its pause
    even while the breaker is open.
    """
    return Settlement(
        claim.incident_id,
        claim.version,
        Verdict.RETRY,
        delay_ms=delay_ms,
        reason=reason,
        sent_at_ms=claim.claimed_at_ms,
        doubt=attempt.in_doubt,
        outage=is_outage(attempt),
    )
