"""Which ``DD-API-KEY`` values the ingest endpoint accepts. Pure.

Producers get ingest keys of their own (``FORWARDER_INGEST_KEYS``), never the Datadog key:
an ingest key can be handed to a CI job and revoked without touching Datadog, and the
Datadog key stays on the workers. Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Final

from pydantic import SecretStr

SEPARATOR: Final = ","


def parse_keys(text: str) -> tuple[str, ...]:
    """The keys of a comma-separated list, whitespace around each ignored, empty ones dropped."""
    return tuple(key.strip() for key in text.split(SEPARATOR) if key.strip())


def configured_keys(setting: SecretStr | None) -> tuple[str, ...]:
    """The keys of ``FORWARDER_INGEST_KEYS`` (none when it is unset)."""
    return parse_keys(setting.get_secret_value()) if setting is not None else ()


class IngestKeysError(ValueError):
    """The configured keys cannot be used; the message says what to set."""


class IngestKeys:
    """The accepted keys; ``accepts(presented)`` in constant time. Never shows a key."""

    __slots__ = ("_datadog", "_keys")

    def __init__(self, keys: tuple[bytes, ...], datadog_key: bytes | None = None) -> None:
        self._keys = keys
        self._datadog = datadog_key

    @classmethod
    def from_settings(cls, keys: SecretStr | None, datadog_key: SecretStr | None) -> IngestKeys:
        """Parse the comma-separated ``FORWARDER_INGEST_KEYS`` (whitespace around keys ignored).

        Raises ``IngestKeysError`` when no key is set, or when one of them is the Datadog key.
        """
        parsed = tuple(key.encode() for key in configured_keys(keys))
        if not parsed:
            raise IngestKeysError(
                "FORWARDER_INGEST_KEYS is not set. Set it to one or more keys of your choosing, "
                "comma-separated (e.g. FORWARDER_INGEST_KEYS=$(openssl rand -hex 24)), and give "
                "each producer one to send as DD-API-KEY; never the Datadog API key."
            )
        datadog = datadog_key.get_secret_value().strip().encode() if datadog_key else None
        if datadog and any(hmac.compare_digest(key, datadog) for key in parsed):
            raise IngestKeysError(
                "FORWARDER_INGEST_KEYS contains DD_API_KEY: give producers keys of their own, "
                "so that the Datadog key never leaves the forwarder"
            )
        return cls(parsed, datadog or None)

    def accepts(self, presented: bytes) -> bool:
        """Whether ``presented`` is one of the keys; its time does not depend on which, if any."""
        matched = False
        for key in self._keys:
            # No short circuit: every key is compared whatever the outcome.
            matched |= hmac.compare_digest(presented, key)
        if self._datadog is not None:
            matched &= not hmac.compare_digest(presented, self._datadog)
        return matched

    def is_datadog_key(self, presented: bytes) -> bool:
        """Whether a producer presented the Datadog API key itself (refused, and worth a log)."""
        return self._datadog is not None and hmac.compare_digest(presented, self._datadog)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"IngestKeys(<{len(self._keys)} key(s)>)"
