"""``dora-forwarder publish``: enqueue events from a JSON-lines file or standard input."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import IO, cast

from config import Settings
from forwarder import Event, InvalidEventError, Publisher, PublishError, jsontext, to_event
from forwarder.protocol import (
    KIND_DEPLOYMENT_PATCH_BY_VERSION,
    KIND_FAILURE,
    PATCH_BY_VERSION_VARIABLE,
)
from workers.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE
from workers.cli.common import publisher as cli_publisher

PUBLISH_CHUNK = 500
"""Events sent to Redis per pipeline by ``publish``."""

MAX_LINE_BYTES = 16 * 1_048_576
"""Longest line ``publish`` reads; a longer one is reported as bad, not held in memory."""

_BOM = b"\xef\xbb\xbf"


def _parse_line(line: bytes, kind: str) -> Event | str:
    """The event of ``kind`` on one line, or why there is none."""
    try:
        data = jsontext.parse(jsontext.utf8(line))
    except jsontext.JsonTextError as exc:
        where = f" (column {exc.column})" if exc.column is not None else ""
        return f"not valid JSON: {exc.reason}{where}"
    try:
        return to_event(data, kind)
    except InvalidEventError as exc:
        return str(exc)


def _lines(stream: IO[bytes]) -> Iterator[bytes | None]:
    """Each line of ``stream`` (split on ``\\n`` only), or None for one past the limit.

    A line longer than ``MAX_LINE_BYTES`` is skipped without being held in memory.
    """
    while line := stream.readline(MAX_LINE_BYTES + 1):
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield None


def _parse_lines(stream: IO[bytes], kind: str) -> Iterator[tuple[int, Event | str]]:
    """Yield ``(line number, event of ``kind`` or error text)`` for each non-blank line.

    Each line is decoded on its own: bytes that are not UTF-8 spoil their line, not the file.
    """
    for number, line in enumerate(_lines(stream), start=1):
        if line is None:
            yield number, f"longer than {MAX_LINE_BYTES} bytes: not read"
            continue
        text = line.removeprefix(_BOM).strip() if number == 1 else line.strip()
        if text:
            yield number, _parse_line(text, kind)


def _open(path: str) -> IO[bytes]:
    """The file at ``path`` as bytes, or standard input for ``-``."""
    if path != "-":
        return open(path, "rb")
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return cast(IO[bytes], buffer)
    # A text stream put in place of stdin (an embedding program, a test): its bytes as UTF-8.
    return io.BytesIO(sys.stdin.read().encode("utf-8", "surrogateescape"))


def cmd_publish(
    settings: Settings,
    path: str,
    err: IO[str],
    kind: str = KIND_FAILURE,
    spool_dir: str | None = None,
) -> int:
    """Enqueue every valid line of ``path``; report each bad one with its line number.

    With a spool (``spool_dir``, else ``FORWARDER_SPOOL_DIR``), what an earlier run left
    there is sent first, and events Redis does not take in time wait there."""
    if kind == KIND_DEPLOYMENT_PATCH_BY_VERSION and not settings.patch_by_version:
        # Refused before a line is read: every line of the file would be refused alike.
        print(
            f"dora-forwarder: --kind {kind}: PATCH by version is a Datadog preview, off by "
            f"default: set {PATCH_BY_VERSION_VARIABLE}=true to send it (here and on the "
            "workers), or name deployments by id with --kind deployment_patch",
            file=err,
        )
        return EXIT_FAILURE
    spool_dir = spool_dir or settings.spool_dir
    try:
        publisher = cli_publisher(settings, spool_dir)
    except OSError as exc:
        print(f"dora-forwarder: cannot open the spool {spool_dir}: {exc}", file=err)
        return EXIT_FAILURE
    if spool_dir is not None:
        drain_first(publisher, spool_dir, err)
    published = bad = spooled = 0
    chunk: list[Event] = []
    name = "stdin" if path == "-" else path
    try:
        with _open(path) as stream:
            for number, item in _parse_lines(stream, kind):
                if isinstance(item, str):
                    bad += 1
                    print(f"{name}:{number}: {item}", file=err)
                    continue
                chunk.append(item)
                if len(chunk) >= PUBLISH_CHUNK:
                    spooled += _publish(publisher, chunk)
                    published += len(chunk)
                    chunk.clear()
            if chunk:
                spooled += _publish(publisher, chunk)
                published += len(chunk)
    except OSError as exc:
        print(f"dora-forwarder: cannot read {name}: {exc.strerror or exc}", file=err)
        return EXIT_FAILURE
    except PublishError as exc:
        print(f"dora-forwarder: {exc} ({published} events were enqueued before)", file=err)
        return EXIT_FAILURE
    finally:
        waiting = publisher.spooled
        publisher.close()
    print(f"published {published} event(s) from {name}; {bad} line(s) rejected", file=err)
    if spooled or waiting:
        print(
            f"Redis did not answer: {spooled} of them spooled to {spool_dir}; {waiting} "
            "event(s) wait there (sent by the next `publish --spool` or `spool drain`)",
            file=err,
        )
    return EXIT_BAD_INPUT if bad else 0


def _publish(publisher: Publisher, chunk: list[Event]) -> int:
    """Publish ``chunk``; how many of its events were spooled."""
    return sum(item.spooled for item in publisher.publish_many(chunk))


def drain_first(publisher: Publisher, spool_dir: str, err: IO[str]) -> None:
    """Send what the spool holds before anything new (which would otherwise queue behind)."""
    waiting = publisher.spooled
    if not waiting:
        return
    try:
        report = publisher.drain_spool()
    except PublishError as exc:
        print(f"dora-forwarder: {waiting} spooled event(s) in {spool_dir} wait: {exc}", file=err)
        return
    if report is None:
        print(f"another process is draining {spool_dir}; new events go behind it", file=err)
        return
    print(
        f"drained {report.sent} spooled event(s) from {spool_dir} first; "
        f"{report.skipped} torn or bad record(s) skipped; {report.waiting} waiting",
        file=err,
    )
