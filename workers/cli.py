"""``dora-forwarder``: publish events, see the forwarder's state, run a worker."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

import redis

from config import Settings, SettingsError, load_settings
from forwarder import IncidentEvent, InvalidEventError, Publisher, PublishError, to_event
from forwarder.protocol import RedisKeys
from workers._cli_common import EXIT_BAD_INPUT, EXIT_FAILURE, redis_client, when
from workers._cli_letters import cmd_dead_letters
from workers._status import Status, read_status

PUBLISH_CHUNK = 500
"""Events sent to Redis per pipeline by ``publish``."""


def _parse_lines(stream: IO[str]) -> Iterator[tuple[int, IncidentEvent | str]]:
    """Yield ``(line number, event or error text)`` for each non-blank line."""
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
            yield number, to_event(data)
        except InvalidEventError as exc:
            yield number, str(exc)


def cmd_publish(settings: Settings, path: str, err: IO[str]) -> int:
    """Enqueue every valid line of ``path``; report each bad one with its line number."""
    publisher = Publisher.from_url(
        settings.redis_url, key_prefix=settings.key_prefix, timeout_s=settings.publish_timeout_s
    )
    published = bad = 0
    chunk: list[IncidentEvent] = []
    name = "stdin" if path == "-" else path
    try:
        with sys.stdin if path == "-" else open(path, encoding="utf-8") as stream:
            for number, item in _parse_lines(stream):
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


def format_status(status: Status) -> str:
    """The human-readable table of ``status``."""
    rows = [
        (
            "backlog (stream)",
            f"{status.backlog}  ({status.unread} unread, {status.pending} being folded)",
        ),
        ("due now", str(status.due_now)),
        ("scheduled (retries, waits)", str(status.scheduled)),
        ("in flight", str(status.in_flight)),
        ("dead letters", str(status.dead_letters)),
        (
            "gate",
            "open"
            if status.gate_open
            else f"closed until {when(status.gate_closed_until_ms)} ({status.gate_reason})",
        ),
        ("delivered (total)", str(status.delivered_total)),
        ("retries (total)", str(status.retries_total)),
        ("last success", when(status.last_success_ms)),
        ("last error", f"{when(status.last_error_ms)}  {status.last_error or ''}".rstrip()),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def cmd_status(settings: Settings, as_json: bool, out: IO[str], err: IO[str]) -> int:
    """Print the forwarder's state as a table, or as JSON."""
    client = redis_client(settings)
    try:
        status = read_status(client, RedisKeys(settings.key_prefix))
    except redis.RedisError as exc:
        print(
            f"dora-forwarder: cannot read status from Redis at "
            f"{settings.redis_url_for_logs}: {exc}",
            file=err,
        )
        return EXIT_FAILURE
    finally:
        client.close()
    if as_json:
        print(json.dumps(status.as_dict(), sort_keys=True), file=out)
    else:
        print(format_status(status), file=out)
    return 0


def cmd_worker(
    settings: Settings,
    concurrency: int | None,
    loglevel: str | None,
    extra: Sequence[str],
    err: IO[str],
) -> int:
    """Run a Celery worker with an embedded beat (one machine's whole forwarder)."""
    if settings.dd_api_key is None:
        print(
            "dora-forwarder: DD_API_KEY is not set; the worker needs it to deliver events "
            "(export DD_API_KEY=<your Datadog API key>)",
            file=err,
        )
        return EXIT_FAILURE
    import workers  # noqa: PLC0415 - Celery is only loaded for the worker

    argv = ["worker", "--beat", f"--loglevel={loglevel or settings.log_level}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    argv.extend(extra)
    workers.app.worker_main(argv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line, with a line of help per command."""
    parser = argparse.ArgumentParser(
        prog="dora-forwarder",
        description="Forward DORA incident events from Redis to Datadog, durably.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    publish = commands.add_parser(
        "publish",
        help="enqueue incident events from a JSON-lines file",
        description="Each line holds an event's attributes, bare or as Datadog's whole body "
        '{"data": {"attributes": {...}}}. Valid lines are enqueued even if '
        "others are bad; exit code 1 if any line was rejected.",
    )
    publish.add_argument("file", help="path of a JSON-lines file, or - for standard input")
    status = commands.add_parser("status", help="show backlog, due, in flight, dead letters")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    letters = commands.add_parser(
        "dead-letters",
        help="list, replay or purge dead letters",
        description="Events that could not be delivered, each with the reason. Replay sends "
        "them back through ingest (merging applies); purge deletes them.",
    )
    actions = letters.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="show dead letters, oldest first")
    listing.add_argument("--json", action="store_true", help="print one JSON array")
    listing.add_argument("--limit", type=int, help="show at most this many")
    for name, text in (("replay", "deliver again"), ("purge", "delete for good")):
        action = actions.add_parser(name, help=f"{text}: dead letters by id, or --all")
        action.add_argument("ids", nargs="*", metavar="ID", help="dead letter ids (from list)")
        action.add_argument("--all", action="store_true", help="every dead letter")
        if name == "purge":
            action.add_argument("--yes", action="store_true", help="really delete them")
    worker = commands.add_parser(
        "worker",
        help="run a worker with an embedded beat (Celery)",
        description="Arguments after -- go to `celery worker` unchanged.",
    )
    worker.add_argument("--concurrency", "-c", type=int, help="worker processes (default: cores)")
    worker.add_argument("--loglevel", "-l", help="log level (default: FORWARDER_LOG_LEVEL)")
    worker.add_argument("celery_args", nargs="*", help="extra arguments for celery worker")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dora-forwarder`` command."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"dora-forwarder: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    result: Any
    if args.command == "publish":
        result = cmd_publish(settings, args.file, sys.stderr)
    elif args.command == "status":
        result = cmd_status(settings, args.json, sys.stdout, sys.stderr)
    elif args.command == "dead-letters":
        result = cmd_dead_letters(settings, args, sys.stdout, sys.stderr)
    else:
        result = cmd_worker(settings, args.concurrency, args.loglevel, args.celery_args, sys.stderr)
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
