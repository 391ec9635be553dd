"""What a pump (and its task) reports as it works, for metrics; they know nothing of Prometheus."""

from __future__ import annotations

from typing import Protocol

from workers.delivery.records import Attempt, Claim, Settlement


class PumpObserver(Protocol):
    """Told of every folded batch and every settled claim, in the pump's process."""

    def folded(self, entries: int, poison: int) -> None:
        """A batch of ``entries`` stream entries was folded; ``poison`` became dead letters."""

    def settled(self, claim: Claim, settlement: Settlement, attempt: Attempt | None) -> None:
        """``claim`` was settled; ``attempt`` is the request's answer (None if not sent)."""

    def tick_dropped(self) -> None:
        """A tick that waited too long was dropped unrun."""

    def replica_shortfall(self, operation: str) -> None:
        """A ``fold`` or ``settle`` was stored, but fewer replicas than wanted acknowledged it."""


class NoObserver:
    """Observes nothing: tests, and workers with metrics turned off."""

    def folded(self, entries: int, poison: int) -> None:
        """Ignore the batch."""

    def settled(self, claim: Claim, settlement: Settlement, attempt: Attempt | None) -> None:
        """Ignore the settlement."""

    def tick_dropped(self) -> None:
        """Ignore the dropped tick."""

    def replica_shortfall(self, operation: str) -> None:
        """Ignore the shortfall."""
