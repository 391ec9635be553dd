"""Event identity: Datadog's id rule, and the id derived when a producer gives none."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Final

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{16,128}")
"""Datadog's id rule; use ``fullmatch`` (``$`` would let a trailing newline through)."""
DERIVED_ID_PREFIX: Final = "dora-"


def derive_incident_id(
    *, started_at_ns: int, env: str | None, services: Sequence[str] | None, team: str | None
) -> str:
    """The id of an incident published without one, from what Datadog matches on.

    Datadog matches incident events by env + service + started_at; the same inputs always
    give the same id, so a finish published later without an id, and every retry, update
    the same incident. Services win over team, as in Datadog's rule.
    """
    owner: list[object] = ["services", sorted(services)] if services else ["team", team or ""]
    basis = json.dumps([env or "", *owner, started_at_ns], separators=(",", ":"))
    return DERIVED_ID_PREFIX + hashlib.sha256(basis.encode()).hexdigest()[:40]


def derive_deployment_id(*, started_at_ns: int, env: str | None, service: str) -> str:
    """The id of a deployment published without one: the same inputs give the same id."""
    basis = json.dumps(["deployment", env or "", service, started_at_ns], separators=(",", ":"))
    return DERIVED_ID_PREFIX + hashlib.sha256(basis.encode()).hexdigest()[:40]
