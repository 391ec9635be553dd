"""Which Redis ``run`` uses and why, said in one line; and the embedded one, started.

``run`` uses ``FORWARDER_REDIS_URL`` when it is set. Otherwise it uses the Redis answering at
the default URL (as ``publish``, ``status`` and the Python ``Publisher`` do: the producers
and the workers must meet), with a warning when that Redis asks no password; and if none
answers there, or one answers that wants a password, it starts an embedded Redis that only
this user can reach (``workers.ops.embedded_redis``).
"""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import IO, Final
from urllib.parse import quote

import platformdirs

from workers.ops.embedded_redis import EmbeddedRedis, EmbeddedRedisError, Probe

APP_NAME: Final = "dora-forwarder"


class RedisChoice(Enum):
    """Which Redis ``run`` uses."""

    CONFIGURED = "configured"
    """FORWARDER_REDIS_URL, or the default one because a Redis answers there."""
    EMBEDDED = "embedded"


class RunConfigError(ValueError):
    """The options of ``run`` contradict each other."""


def choose_redis(*, url_set: bool, embedded_requested: bool, default_answers: bool) -> RedisChoice:
    """Pure: an explicit URL is always used (even while it is down: workers wait for it);
    without one, a Redis answering at the default URL is used; otherwise ``run`` embeds one.
    """
    if embedded_requested:
        if url_set:
            raise RunConfigError(
                "--embedded-redis and FORWARDER_REDIS_URL both choose a Redis; use one of them"
            )
        return RedisChoice.EMBEDDED
    if url_set or default_answers:
        return RedisChoice.CONFIGURED
    return RedisChoice.EMBEDDED


def why(*, url_set: bool, embedded_requested: bool, default: Probe, default_url: str) -> str:
    """Pure: the reason for ``choose_redis``'s answer, in words (``default_url`` masked)."""
    if url_set:
        return "FORWARDER_REDIS_URL is set"
    if embedded_requested:
        return "--embedded-redis"
    if default is Probe.ANSWERS:
        return f"FORWARDER_REDIS_URL is not set, and a Redis answers at {default_url}"
    if default is Probe.NEEDS_PASSWORD:
        return (
            f"FORWARDER_REDIS_URL is not set, and the Redis at {default_url} asks for a "
            "password: set FORWARDER_REDIS_URL with it to use that one"
        )
    return f"FORWARDER_REDIS_URL is not set, and no Redis answers at {default_url}"


OPEN_REDIS_WARNING: Final = (
    "dora-forwarder: warning: that Redis asks no password, so any local user can read the "
    "queued events, change them, or add events that go out under your DD_API_KEY. Set "
    "FORWARDER_REDIS_URL to a Redis with a password, or use --embedded-redis for one of "
    "your own."
)


def default_data_dir() -> Path:
    """Where an embedded Redis keeps its data unless told: the user's data directory."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "redis"


def export_hint(server: EmbeddedRedis) -> str:
    """A shell line that points other commands at ``server``, reading its password file."""
    socket = quote(str(server.socket_path))
    password = shlex.quote(str(server.password_path))
    return f'export FORWARDER_REDIS_URL="unix://{socket}?db=0&password=$(cat {password})"'


def start_embedded(server: EmbeddedRedis, reason: str, err: IO[str]) -> bool:
    """Start ``server`` and say where it is and why, or why it would not start."""
    try:
        server.start()
    except EmbeddedRedisError as exc:
        for note in server.notes:
            print(f"dora-forwarder: {note}", file=err)
        print(
            f"dora-forwarder: cannot start the embedded Redis ({reason}): {exc}. Start a "
            "Redis, or set FORWARDER_REDIS_URL.",
            file=err,
        )
        return False
    for note in server.notes:
        print(f"dora-forwarder: {note}", file=err)
    print(
        f"dora-forwarder: Redis: started an embedded Redis on {server.where} ({reason}); it "
        f"requires the password in {server.password_path} (readable by you alone); its data "
        f"(append-only file) is in {server.data_dir}",
        file=err,
    )
    print(f"dora-forwarder: other commands reach it with: {export_hint(server)}", file=err)
    if server.port is not None:
        print(
            f"dora-forwarder: or over TCP: redis://:<that password>@127.0.0.1:{server.port}/0",
            file=err,
        )
    err.flush()
    return True
