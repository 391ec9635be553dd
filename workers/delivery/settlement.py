"""Pure policy: how a claimed state is settled, before its request is sent or from its answer.

A claim owes Datadog requests (``operations.owed_requests``); ``before_sending`` picks the
first one, or settles the claim without a request (nothing owed, a finish waiting for its
start, an invalid state, a PATCH or DELETE waiting for the application key); ``from_answer``
settles it from what that request produced.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from forwarder.protocol import StateField, parse_state_id
from workers.delivery.operations import ApiRequest, Step, owed_requests, state_digest
from workers.delivery.outcome import AUTH_STATUSES, decide
from workers.delivery.records import Attempt, Claim, Settlement, Verdict
from workers.delivery.sendable import app_key_unusable, unsendable
from workers.delivery.verdicts import (
    SettlementPolicy,
    dead_letter,
    delivered,
    retry,
    wait_for_app_key,
)

NOT_FOUND: Final = 404

__all__ = [
    "SettlementPolicy",
    "before_sending",
    "dead_letter",
    "delivered",
    "from_answer",
    "state_digest",
]


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
    return unsendable(claim, request, policy) or app_key_unusable(claim, request, policy) or request


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
        return retry(claim, attempt, int(policy.auth_pause_s * 1000), decision.reason)
    age_ms = _failing_for_ms(claim)
    if age_ms >= policy.max_age_ms:
        return dead_letter(
            claim,
            f"expired after {claim.attempt + 1} attempts over {age_ms / 3_600_000:.1f} h "
            f"(FORWARDER_MAX_AGE_S); last error: {decision.reason}",
            attempt,
            request,
        )
    return retry(claim, attempt, int(decision.delay_s * 1000), decision.reason)


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
        return wait_for_app_key(
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
    return retry(
        claim,
        attempt,
        min(delay_ms, max(1, policy.patch_wait_ms - waited_ms)),
        f"Datadog does not know deployment {event_id} yet (HTTP 404); retrying for up to "
        f"{policy.patch_wait_ms / 1000:.0f} s (FORWARDER_PATCH_WAIT_S)",
    )
