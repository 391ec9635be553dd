"""``dora-forwarder spool drain DIR``: send what a producer spool holds, now, in order."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from config import Settings
from forwarder import PublishError
from workers.cli.common import EXIT_FAILURE
from workers.cli.common import publisher as cli_publisher


def cmd_spool_drain(settings: Settings, directory: str, out: IO[str], err: IO[str]) -> int:
    """Drain the spool in ``directory``; print what was sent, skipped, and still waits.

    Exit 0 when it is empty; ``EXIT_FAILURE`` when Redis still does not answer, another
    process is draining it, or there is no such directory (a typo would otherwise start an
    empty spool)."""
    if not Path(directory).is_dir():
        print(f"dora-forwarder: {directory} is no directory: there is no spool to drain", file=err)
        return EXIT_FAILURE
    try:
        publisher = cli_publisher(settings, directory)
    except OSError as exc:
        print(f"dora-forwarder: cannot open the spool {directory}: {exc}", file=err)
        return EXIT_FAILURE
    try:
        report = publisher.drain_spool()
    except PublishError as exc:
        print(
            f"dora-forwarder: {exc}; {publisher.spooled} event(s) still wait in {directory}",
            file=err,
        )
        return EXIT_FAILURE
    finally:
        publisher.close()
    if report is None:
        print(f"dora-forwarder: another process is draining {directory}", file=err)
        return EXIT_FAILURE
    print(
        f"drained {report.sent} event(s) from {directory}; {report.skipped} torn or bad "
        f"record(s) skipped; {report.waiting} waiting",
        file=out,
    )
    return 0
