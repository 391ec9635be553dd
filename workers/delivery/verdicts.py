"""Pure policy's records: the limits a settlement obeys, and how each kind of settlement is
built (delivered, dead letter, retry, a wait for the application key)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from workers.delivery.backoff import BackoffPolicy
from workers.delivery.breaker import is_outage
from workers.delivery.operations import ApiRequest, Step, split_state, state_digest
from workers.delivery.records import MAX_BODY_KEPT, Attempt, Claim, Settlement, Verdict


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


def step_fields(request: ApiRequest | None) -> dict[str, Any]:
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
        digest=_post_digest(claim, request),
        sent_at_ms=sent_at_ms,
        **step_fields(request),
    )


def _post_digest(claim: Claim, request: ApiRequest | None) -> str:
    """The digest of the POST attributes Datadog holds: a POST request carries it already."""
    if request is not None and request.step is Step.POST:
        return request.done
    return state_digest(split_state(claim.attributes).post)


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
        **step_fields(request),
    )


def wait_for_app_key(
    claim: Claim, request: ApiRequest, delay_ms: int, why: str, *, sent_at_ms: int = 0
) -> Settlement:
    """A PATCH or DELETE kept until an application key can be used (never a dead letter);
    ``sent_at_ms``: when its request went out, if one was refused."""
    return Settlement(
        claim.incident_id,
        claim.version,
        Verdict.WAIT,
        delay_ms=max(1, delay_ms),
        reason=f"{request.method} waits for a usable application key: {why} (DD_APP_KEY)",
        sent_at_ms=sent_at_ms,
        app_key_wait=True,
        step=request.step,  # a refused request gives the key's probe back (settle.lua)
    )


def retry(claim: Claim, attempt: Attempt, delay_ms: int, reason: str) -> Settlement:
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
