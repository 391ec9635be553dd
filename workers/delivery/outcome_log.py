"""The log lines an operator reads: one per outcome, the gate's reopening, the breaker's changes."""

from __future__ import annotations

import logging

from workers.delivery.breaker import BreakerPolicy
from workers.delivery.gate import REASON_AUTH, REASON_RATE_LIMIT
from workers.delivery.records import Attempt, Claim, Settlement, SettleResult, Verdict

# The pump's name: operators filter on it, and it predates this module.
log = logging.getLogger("dora_forwarder.pump")


def log_outcome(claim: Claim, settlement: Settlement, attempt: Attempt | None = None) -> Settlement:
    """One log line per outcome that matters to an operator, with its fields as ``extra``.

    Fields: ``incident``, ``verdict``, ``status`` (None without an HTTP answer),
    ``attempt`` (this attempt's number, None when nothing was sent), and ``reason``
    for retries and dead letters, ``retry_in_s`` for retries.
    """
    status = attempt.status if attempt else None
    fields = {
        "incident": claim.incident_id,
        "verdict": str(settlement.verdict),
        "status": status,
        "attempt": claim.attempt + 1 if attempt is not None else None,
    }
    if settlement.step and settlement.step != "post":
        # PATCH and DELETE say so; a POST's lines stay as they always were.
        fields["request"] = settlement.step.upper()
    if settlement.verdict is Verdict.DELIVERED and attempt is not None:
        log.info(
            "delivered incident=%s status=%s attempt=%d%s",
            claim.incident_id,
            status,
            claim.attempt + 1,
            f" request={fields['request']}" if "request" in fields else "",
            extra=fields,
        )
    elif settlement.verdict is Verdict.RETRY:
        log.info(
            "retry incident=%s status=%s attempt=%d in=%.1fs reason=%s",
            claim.incident_id,
            status,
            claim.attempt + 1,
            settlement.delay_ms / 1000,
            settlement.reason,
            extra={
                **fields,
                "retry_in_s": settlement.delay_ms / 1000,
                "reason": settlement.reason,
            },
        )
    elif settlement.verdict is Verdict.DEAD:
        log.error(
            "dead letter: incident=%s reason=%s",
            claim.incident_id,
            settlement.reason,
            extra={**fields, "reason": settlement.reason},
        )
    return settlement


def log_breaker(result: SettleResult, policy: BreakerPolicy) -> None:
    """One line when a settlement opened or closed the fleet's circuit breaker."""
    if result.breaker_opened:
        log.warning(
            "Datadog's API looks down (%d failed requests in a row across the fleet): "
            "circuit breaker open; one request at a time probes it, every %g to %g s, "
            "and everything waiting goes out once it answers",
            policy.failures,
            policy.probe_ms / 1000,
            policy.probe_max_ms / 1000,
            extra={"breaker": "open"},
        )
    elif result.breaker_closed:
        log.warning(
            "Datadog's API answers again: circuit breaker closed; delivery resumes in full",
            extra={"breaker": "closed"},
        )


def log_gate_reopened(reason: str) -> None:
    """One line for the fleet when a pause of the whole fleet is over (``reason``: why it was
    closed); the line that closed it said until when."""
    # Not "delivery resumes": the circuit breaker, or a budget, may still hold the fleet back.
    if reason == REASON_AUTH:
        what = "the pause after a refused API key is over: one request probes the key"
    elif reason == REASON_RATE_LIMIT:
        what = "the pause after Datadog's rate limit (HTTP 429) is over: the gate is open"
    else:
        what = f"the fleet's pause ({reason}) is over: the gate is open"
    log.info("%s", what, extra={"gate": "open", "closed_for": reason})
