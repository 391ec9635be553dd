"""Pure policy: what must not go out, yet or at all, before a request is sent.

A POST of a finish without its start waits for it; a POST whose second another deployment
holds, or a merged state that breaks a rule, is a dead letter; a PATCH by version where it is
not enabled, or an id a path cannot carry, too. A PATCH or DELETE without a usable
application key waits, kept, never dead-lettered for it.
"""

from __future__ import annotations

from typing import Final

from forwarder import InvalidEventError
from forwarder.entry import to_event
from forwarder.protocol import (
    KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_PATCH,
    KIND_DEPLOYMENT_PATCH_BY_VERSION,
    KIND_FAILURE,
    STATE_DEPLOYMENT_VERSION,
    TARGET_ID_PATTERN,
    parse_state_id,
)
from workers.delivery.fold import is_complete
from workers.delivery.operations import ApiRequest, Step, split_state
from workers.delivery.records import Claim, Settlement, Verdict
from workers.delivery.verdicts import SettlementPolicy, dead_letter, wait_for_app_key

APP_KEY_PROBE_WAIT_MS: Final = 1_000
"""How long a PATCH or DELETE waits while another request probes a refused application key."""

BY_VERSION_WAIT_MS: Final = 1_000
"""How long a PATCH by version waits before it looks again for its deployment's POST."""

_ENDPOINT_KINDS: Final = {
    Step.POST: (KIND_FAILURE, KIND_DEPLOYMENT),
    Step.DELETE: (KIND_FAILURE, KIND_DEPLOYMENT),
    Step.PATCH: (KIND_DEPLOYMENT, STATE_DEPLOYMENT_VERSION),
}
"""The kinds of state each request has an endpoint for (fold writes no other)."""

_NOUNS: Final = {
    KIND_FAILURE: "incident",
    KIND_DEPLOYMENT: "deployment",
    STATE_DEPLOYMENT_VERSION: "deployment (by version)",
}


def app_key_unusable(
    claim: Claim, request: ApiRequest, policy: SettlementPolicy
) -> Settlement | None:
    """A wait for a PATCH or DELETE without a usable application key, or None."""
    if not request.needs_app_key:
        return None
    if not policy.has_app_key:
        return wait_for_app_key(
            claim, request, int(policy.auth_pause_s * 1000), "DD_APP_KEY is not set"
        )
    if claim.app_key_paused_until_ms > claim.claimed_at_ms:
        return wait_for_app_key(
            claim,
            request,
            claim.app_key_paused_until_ms - claim.claimed_at_ms,
            "Datadog refused the application key",
        )
    return None


def probes_app_key(claim: Claim, request: ApiRequest) -> bool:
    """Whether ``request`` tries an application key Datadog refused, now that the pause is
    over: only one such request may be in flight across the fleet (``Store``'s probe); the
    others wait for its answer, as a refused API key's probe holds the fleet."""
    return request.needs_app_key and 0 < claim.app_key_paused_until_ms <= claim.claimed_at_ms


def wait_for_app_key_probe(claim: Claim, request: ApiRequest) -> Settlement:
    """A PATCH or DELETE held back while another request probes the refused key."""
    return wait_for_app_key(
        claim,
        request,
        APP_KEY_PROBE_WAIT_MS,
        "Datadog refused the application key; another request is trying it again",
    )


def unsendable(claim: Claim, request: ApiRequest, policy: SettlementPolicy) -> Settlement | None:
    """How to settle a request that must not go out (incomplete, invalid), or None."""
    kind, event_id = parse_state_id(claim.incident_id)
    if kind not in _ENDPOINT_KINDS[request.step]:
        # Only a state written by hand gets here: validating it would raise (no model for
        # its kind), and its request would go to another kind's endpoint.
        return dead_letter(
            claim,
            f"{request.method} of {claim.incident_id!r}: Datadog has no such request for a "
            f"state of kind {kind!r}",
            request=request,
        )
    if request.step is Step.POST:
        return _post_unsendable(claim, request, policy)
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
        started = post.get("started_at")
        # Nanoseconds as fold stores them; anything else was written by hand: shown as is.
        second = started // 1_000_000_000 if isinstance(started, int) else repr(started)
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
        if claim.waits_for is not None:
            return Settlement(
                claim.incident_id,
                claim.version,
                Verdict.WAIT,
                delay_ms=BY_VERSION_WAIT_MS,
                reason=f"PATCH by version waits for the POST of deployment {claim.waits_for} "
                "(the same service, env and version), still to be sent",
            )
        data, patch_kind = dict(patch), KIND_DEPLOYMENT_PATCH_BY_VERSION
    else:
        data, patch_kind = {**patch, "id": event_id}, KIND_DEPLOYMENT_PATCH
    try:
        to_event(data, patch_kind)
    except InvalidEventError as exc:
        return dead_letter(claim, f"merged PATCH is invalid: {exc}", request=request)
    return None
