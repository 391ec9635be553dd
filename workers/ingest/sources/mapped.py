"""What one notification of a source maps to: events to enqueue, items ignored and why. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forwarder import Event
from forwarder.jsontext import printable
from workers.ingest.jsonapi import ApiError


@dataclass(frozen=True, slots=True)
class Ignored:
    """An item the source sent that is deliberately not an event (a 2xx says which, and why)."""

    what: str
    reason: str
    loud: bool = False
    """Also a WARNING in the log: something was lost that the operator must hear of (the
    sender reads no answer; Alertmanager's ``truncatedAlerts``)."""

    def as_json(self) -> dict[str, str]:
        # ``what`` quotes the source's own ids and labels: a lone surrogate in one would make
        # the answer unencodable (a 500), so every unprintable character is escaped.
        return {"what": printable(self.what), "reason": printable(self.reason)}


@dataclass(slots=True)
class Mapped:
    """The events of a notification, what it held that is ignored, and what was refused.

    ``refused`` holds the items that could not be mapped while others could (an
    Alertmanager group): the good ones are enqueued all the same, the answer names the bad.
    """

    events: list[Event] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    refused: list[ApiError] = field(default_factory=list)
    held: list[Ignored] = field(default_factory=list)
    """Kept in Redis until more is known (a GitLab deployment's start, until its success)."""
    enqueued: bool = False
    """The events are in the stream already (GitLab's: in the transaction of the join)."""

    def answer(self) -> dict[str, Any]:
        """The body of the answer: what was accepted (by id), ignored and refused."""
        return {
            "accepted": [{"id": event.event_id, "kind": event.KIND} for event in self.events],
            "ignored": [item.as_json() for item in self.ignored],
            "refused": [error.as_json() for error in self.refused],
            **({"held": [item.as_json() for item in self.held]} if self.held else {}),
        }
