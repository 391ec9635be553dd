"""``dora-forwarder publish``: enqueue events from a JSON-lines file or standard input."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import IO

from config import Settings
from forwarder import Event, InvalidEventError, Publisher, PublishError, to_event
from forwarder.protocol import KIND_FAILURE
from workers.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE

PUBLISH_CHUNK = 500
"""Events sent to Redis per pipeline by ``publish``."""


def _parse_lines(stream: IO[str], kind: str) -> Iterator[tuple[int, Event | str]]:
    """Yield ``(line number, event of ``kind`` or error text)`` for each non-blank line."""
    for number, line in enumerate(stream, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, f"not valid JSON: {exc.msg} (column {exc.colno})"
            continue
        try:
            yield number, to_event(data, kind)
        except InvalidEventError as exc:
            yield number, str(exc)


def cmd_publish(settings: Settings, path: str, err: IO[str], kind: str = KIND_FAILURE) -> int:
    """Enqueue every valid line of ``path``; report each bad one with its line number."""
    publisher = Publisher.from_url(
        settings.redis_url, key_prefix=settings.key_prefix, timeout_s=settings.publish_timeout_s
    )
    published = bad = 0
    chunk: list[Event] = []
    name = "stdin" if path == "-" else path
    try:
        with sys.stdin if path == "-" else open(path, encoding="utf-8") as stream:
            for number, item in _parse_lines(stream, kind):
                if isinstance(item, str):
                    bad += 1
                    print(f"{name}:{number}: {item}", file=err)
                    continue
                chunk.append(item)
                if len(chunk) >= PUBLISH_CHUNK:
                    published += len(publisher.publish_many(chunk))
                    chunk.clear()
            if chunk:
                published += len(publisher.publish_many(chunk))
    except OSError as exc:
        print(f"dora-forwarder: cannot read {name}: {exc.strerror or exc}", file=err)
        return EXIT_FAILURE
    except PublishError as exc:
        print(f"dora-forwarder: {exc} ({published} events were enqueued before)", file=err)
        return EXIT_FAILURE
    finally:
        publisher.close()
    print(f"published {published} event(s) from {name}; {bad} line(s) rejected", file=err)
    return EXIT_BAD_INPUT if bad else 0
