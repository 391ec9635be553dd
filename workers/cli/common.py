"""What the CLI's commands share: exit codes, the Redis client, how times are shown."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import redis

from config import Settings
from forwarder import Publisher, connection

EXIT_BAD_INPUT: Final = 1
"""Some input was rejected (a bad line, an unknown dead letter, a missing --yes)."""

EXIT_FAILURE: Final = 2
"""The command could not do its work (Redis unreachable, unreadable file, bad setting)."""


def redis_client(settings: Settings) -> redis.Redis:
    """A client for the CLI's short commands, giving up after the publish timeout."""
    return connection.redis_client(
        settings.redis_url,
        sentinel_master=settings.redis_sentinel_master,
        socket_timeout=settings.publish_timeout_s,
        socket_connect_timeout=settings.publish_timeout_s,
    )


def publisher(settings: Settings, spool_dir: str | None = None) -> Publisher:
    """The CLI's publisher: the settings' Redis (Sentinel too), replicas, and ``spool_dir``
    (with its size limit) when given. ``OSError`` when the spool cannot be opened."""
    return Publisher.from_url(
        settings.redis_url,
        key_prefix=settings.key_prefix,
        timeout_s=settings.publish_timeout_s,
        patch_by_version=settings.patch_by_version,
        sentinel_master=settings.redis_sentinel_master,
        replicas=settings.publish_replicas,
        replicas_timeout_s=settings.publish_replicas_timeout_s,
        spool_dir=spool_dir,
        spool_max_bytes=settings.spool_max_bytes,
    )


def when(ms: int | None) -> str:
    """A time in ms since the epoch, for people (UTC, to the second)."""
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def missing_key_message() -> str:
    """What to do when DD_API_KEY is not set."""
    return (
        "dora-forwarder: DD_API_KEY is not set. Set it to your Datadog API key "
        "(export DD_API_KEY=...; DD_SITE=datadoghq.eu or another site if your org is not on "
        "datadoghq.com), or try `dora-forwarder run --dry-run`, which prints each request "
        "instead of sending it."
    )
