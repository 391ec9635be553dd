"""The one log line per outcome that an operator reads: text for people, fields for machines."""

from __future__ import annotations

import logging

from workers.delivery.records import Attempt, Claim, Settlement, Verdict

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
    if settlement.verdict is Verdict.DELIVERED and attempt is not None:
        log.info(
            "delivered incident=%s status=%s attempt=%d",
            claim.incident_id,
            status,
            claim.attempt + 1,
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
