"""What a publisher checks beyond the models: the preview PATCH by version is off unless
turned on, and a deployment without version or git is worth a warning (once per service)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Final

from pydantic import TypeAdapter, ValidationError

from forwarder._errors import FieldError, InvalidEventError
from forwarder._models import DeploymentEvent
from forwarder._operations import DeploymentPatchByVersion
from forwarder.entry import Event
from forwarder.jsontext import printable
from forwarder.protocol import PATCH_BY_VERSION_VARIABLE

log = logging.getLogger("dora_forwarder.publish")

PATCH_BY_VERSION_REFUSAL: Final = (
    f"PATCH by version is a Datadog preview: set {PATCH_BY_VERSION_VARIABLE}=true to send it"
)
MAX_WARNED_SERVICES: Final = 10_000
"""Services a publisher remembers having warned about (unversioned deployments): a stream
of made-up names cannot grow its memory past this, nor its warnings."""
_SHOWN_SERVICE_CHARS: Final = 100
_BOOL: Final = TypeAdapter(bool)


def patch_by_version_from_env() -> bool:
    """``FORWARDER_PATCH_BY_VERSION`` read as the settings read it (true/1/yes/on, any case).

    Unset or empty is off; any other value is a ``ValueError`` naming the variable.
    """
    text = os.environ.get(PATCH_BY_VERSION_VARIABLE, "").strip()
    if not text:
        return False
    try:
        return _BOOL.validate_python(text)
    except ValidationError:
        raise ValueError(
            f"{PATCH_BY_VERSION_VARIABLE} must be true or false (1/0, yes/no, on/off), "
            f"not {printable(text[:20])!r}"
        ) from None


class EventChecks:
    """The checks of one publisher; thread-safe (the warned services are under a lock)."""

    def __init__(self, patch_by_version: bool) -> None:
        self.patch_by_version = patch_by_version
        self.warned: set[bytes] = set()
        self._warned_full = False
        self._warned_lock = threading.Lock()

    def check(self, event: Event) -> None:
        """Refuse a PATCH by version while it is off; warn of an unversioned deployment."""
        if isinstance(event, DeploymentEvent):
            if event.version is None and event.git is None:
                self._warn_unversioned(event.service)
        elif isinstance(event, DeploymentPatchByVersion) and not self.patch_by_version:
            raise InvalidEventError([FieldError("kind", PATCH_BY_VERSION_REFUSAL)])

    def _warn_unversioned(self, service: str) -> None:
        """One WARNING per service (per publisher): its deployments cannot be rolled back."""
        digest = hashlib.blake2b(service.encode("utf-8", "surrogatepass"), digest_size=16)
        key = digest.digest()
        with self._warned_lock:
            if self._warned_full or key in self.warned:
                return
            full = self._warned_full = len(self.warned) >= MAX_WARNED_SERVICES
            if not full:
                self.warned.add(key)
        if full:
            log.warning(
                "deployments without version or git came from more than %d services; "
                "this publisher warns of no more of them",
                MAX_WARNED_SERVICES,
            )
            return
        shown = printable(service[:_SHOWN_SERVICE_CHARS])
        log.warning(
            "deployment of service '%s' has neither version nor git: Datadog identifies a "
            "deployment by env + service + version and detects rollbacks by commit SHA (git) "
            "or by version, so rollback and rollforward change failure detection cannot work "
            "for it; publish its version or git (said once per service)",
            shown + ("..." if len(service) > _SHOWN_SERVICE_CHARS else ""),
        )
