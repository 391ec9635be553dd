"""``run``'s ingest endpoint: ``dora-forwarder serve`` as a child process, stopped with ``run``.

It starts when ``FORWARDER_INGEST_KEYS`` is set, with the environment ``run`` prepared (the
embedded Redis' URL included) minus Datadog's variables: the web-facing process never holds
``DD_API_KEY``. It runs in ``run``'s process group (a Ctrl-C reaches it too), and gets SIGTERM
if ``run`` dies without stopping it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import IO, Final

from config import Settings
from workers.cli.serve import ServeSettingsError, serve_keys
from workers.ingest.keys import IngestKeysError, configured_keys
from workers.ops.child import stop, stop_with_parent

STOP_TIMEOUT_S: Final = 10.0
WITHHELD_PREFIX: Final = "DD_"
"""Datadog's variables (``DD_API_KEY`` above all) never reach ``serve``."""


def serve_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without Datadog's variables (names compared case-insensitively, as the
    settings read them)."""
    return {k: v for k, v in environ.items() if not k.upper().startswith(WITHHELD_PREFIX)}


def ingest_wanted(settings: Settings) -> bool:
    """Whether ``run`` starts the ingest endpoint: when at least one ingest key is set."""
    return bool(configured_keys(settings.ingest_keys))


def ingest_problem(settings: Settings) -> str | None:
    """Why the wanted ingest endpoint could not start (say it before starting anything)."""
    if not ingest_wanted(settings):
        return None
    try:
        serve_keys(settings)
    except (IngestKeysError, ServeSettingsError) as exc:
        return f"dora-forwarder: {exc}"
    return None


def ingest_address(settings: Settings) -> str:
    """Where ``serve`` listens with these settings."""
    scheme = "https" if settings.ingest_tls_certfile else "http"
    return f"{scheme}://{settings.ingest_host}:{settings.ingest_port}"


class IngestChild:
    """One ``python -m workers.cli serve`` started by ``run``."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @classmethod
    def start(cls) -> IngestChild:
        """Start ``serve`` with this process' environment as it is now, minus ``DD_*``."""
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "serve"],
            stdin=subprocess.DEVNULL,
            env=serve_environment(os.environ),
            preexec_fn=stop_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509 - no threads yet
        )
        return cls(process)

    def stop(self) -> None:
        """SIGTERM (requests under way finish), then SIGKILL if it hangs."""
        stop(self.process, STOP_TIMEOUT_S)


def start_ingest(settings: Settings, err: IO[str]) -> IngestChild | None:
    """Start the endpoint if wanted; either way say so on ``err``. None when it is off."""
    if not ingest_wanted(settings):
        print(
            "dora-forwarder: ingest endpoint off: FORWARDER_INGEST_KEYS is not set (set it "
            "to accept Datadog's DORA API from producers; see dora-forwarder serve --help)",
            file=err,
            flush=True,
        )
        return None
    print(
        f"dora-forwarder: ingest endpoint (Datadog's DORA API for producers) on "
        f"{ingest_address(settings)}",
        file=err,
        flush=True,
    )
    return IngestChild.start()
