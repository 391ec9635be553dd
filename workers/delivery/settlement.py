"""Pure policy: how a claimed incident is settled, before it is sent or from its answer."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from forwarder import InvalidEventError
from forwarder.entry import to_event
from forwarder.protocol import KIND_DEPLOYMENT, KIND_FAILURE
from workers.delivery.backoff import BackoffPolicy
from workers.delivery.breaker import is_outage
from workers.delivery.fold import is_complete
from workers.delivery.outcome import AUTH_STATUSES, decide
from workers.delivery.records import MAX_BODY_KEPT, Attempt, Claim, Settlement, Verdict

_NOUNS: Final = {KIND_FAILURE: "incident", KIND_DEPLOYMENT: "deployment"}


@dataclass(frozen=True, slots=True)
class SettlementPolicy:
    """The limits that decide between retrying, waiting and giving up."""

    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    orphan_wait_ms: int = 6 * 3_600_000
    max_age_ms: int = 3 * 86_400_000
    auth_pause_s: float = 60.0


def state_digest(attributes: Mapping[str, Any]) -> str:
    """A short fingerprint of a state's attributes: equal states, equal digests.

    16 hex digits of SHA-1 over canonical JSON; a finish record keeps the digest of what
    Datadog holds, so that a state made again after it expired costs no request if equal.
    """
    canonical = json.dumps(attributes, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode(), usedforsecurity=False).hexdigest()[:16]


def delivered(claim: Claim, reason: str = "", *, sent_at_ms: int = 0) -> Settlement:
    """``claim``'s state is what Datadog holds (``sent_at_ms``: when its request went out)."""
    return Settlement(
        claim.incident_id,
        claim.version,
        Verdict.DELIVERED,
        reason=reason,
        digest=state_digest(claim.attributes),
        sent_at_ms=sent_at_ms,
    )


def dead_letter(claim: Claim, reason: str, attempt: Attempt | None = None) -> Settlement:
    """A dead letter for ``claim``, with the answer (if any) and the merged attributes."""
    detail = {
        "status": attempt.status if attempt else None,
        "response": attempt.body[:MAX_BODY_KEPT] if attempt else None,
        "attributes": claim.attributes,
        "attempts": claim.attempt + (1 if attempt else 0),
    }
    return Settlement(
        claim.incident_id,
        claim.version,
        Verdict.DEAD,
        reason=reason,
        detail=json.dumps(detail, separators=(",", ":")),
        sent_at_ms=claim.claimed_at_ms if attempt else 0,
        doubt=attempt.in_doubt if attempt else False,
    )


def owes_resend(claim: Claim) -> bool:
    """Whether ``claim`` must be sent although its version was delivered.

    An earlier request whose fate was in doubt may have landed after that delivery; once it
    can no longer land (``doubt_until_ms``), one more send of the current version makes it
    the last to land.
    """
    return claim.doubt_until_ms is not None and claim.claimed_at_ms >= claim.doubt_until_ms


def before_sending(claim: Claim, policy: SettlementPolicy) -> Settlement | None:
    """How to settle a claim that must not be sent, or None to send it.

    Already delivered (a lapsed lease came back), unless a resend is owed
    (``owes_resend``), or made again after it expired exactly as Datadog holds it (a late
    duplicate of a finished incident's start): settle as delivered. A finish without its
    start: wait for it, or give up after the orphan wait. A merged state that breaks a rule
    (say, a finish earlier than its stored start), or a stored state the worker cannot read
    (``Claim.problem``): dead letter, without costing a request.
    """
    if claim.problem is not None:
        return dead_letter(
            claim, f"stored state of {claim.incident_id} is unusable: {claim.problem}"
        )
    return _before_sending_readable(claim, policy)


def _before_sending_readable(claim: Claim, policy: SettlementPolicy) -> Settlement | None:
    """``before_sending`` for a claim whose stored state could be read."""
    if claim.version <= claim.sent_version and not owes_resend(claim):
        return delivered(claim, "sent")
    if claim.remembered_digest == state_digest(claim.attributes):
        return delivered(claim, "Datadog holds this state already (finish record)")
    if not is_complete(claim.attributes):
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
        )
    try:
        to_event(claim.attributes, claim.kind)
    except InvalidEventError as exc:
        return dead_letter(claim, f"merged {_NOUNS[claim.kind]} is invalid: {exc}")
    return None


def from_answer(
    claim: Claim,
    attempt: Attempt,
    policy: SettlementPolicy,
    uniform: Callable[[], float] = random.random,
) -> Settlement:
    """How to settle a claim from what its request produced."""
    decision = decide(
        attempt, failures_so_far=claim.attempt, backoff=policy.backoff, uniform=uniform
    )
    if decision.verdict is Verdict.DEAD:
        return dead_letter(claim, decision.reason, attempt)
    if decision.verdict is Verdict.DELIVERED:
        return delivered(claim, sent_at_ms=claim.claimed_at_ms)
    if attempt.status in AUTH_STATUSES:
        # Never expires: the events wait for a working key, however long that takes.
        return _retry(claim, attempt, int(policy.auth_pause_s * 1000), decision.reason)
    age_ms = 0 if claim.failing_since_ms is None else claim.claimed_at_ms - claim.failing_since_ms
    if age_ms >= policy.max_age_ms:
        return dead_letter(
            claim,
            f"expired after {claim.attempt + 1} attempts over {age_ms / 3_600_000:.1f} h "
            f"(FORWARDER_MAX_AGE_S); last error: {decision.reason}",
            attempt,
        )
    return _retry(claim, attempt, int(decision.delay_s * 1000), decision.reason)


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
