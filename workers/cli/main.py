"""``dora-forwarder``: the command line (one parser); each command lives in a module of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from config import SettingsError, load_settings
from forwarder.protocol import KIND_FAILURE, KINDS, PATCH_BY_VERSION_VARIABLE
from workers.cli.common import EXIT_FAILURE
from workers.cli.dead_letters import cmd_dead_letters
from workers.cli.doctor import cmd_doctor
from workers.cli.publish import cmd_publish
from workers.cli.run import RunOptions, cmd_run, default_data_dir
from workers.cli.serve import add_serve_parser, cmd_serve
from workers.cli.spool import cmd_spool_drain
from workers.cli.status import cmd_status
from workers.cli.worker import cmd_worker


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3600 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line, with a line of help per command."""
    parser = argparse.ArgumentParser(
        prog="dora-forwarder",
        description="Forward DORA incident events from Redis to Datadog, durably.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    publish = commands.add_parser(
        "publish",
        help="enqueue incident (or deployment, PATCH, DELETE) events from a JSON-lines file",
        description="Each line holds an event's attributes, bare or as Datadog's whole body "
        '{"data": {"attributes": {...}}} (a PATCH\'s data.id names its deployment). Valid '
        "lines are enqueued even if others are bad; exit code 1 if any line was rejected.",
    )
    publish.add_argument("file", help="path of a JSON-lines file, or - for standard input")
    publish.add_argument(
        "--kind",
        choices=KINDS,
        default=KIND_FAILURE,
        help="what the lines are: incidents (failure, the default), deployments, "
        'deployment_patch ({"id", "change_failure", "remediation"}), '
        "deployment_patch_by_version (a Datadog preview: needs "
        f"{PATCH_BY_VERSION_VARIABLE}=true), deployment_delete or failure_delete "
        '({"id"})',
    )
    publish.add_argument(
        "--spool",
        metavar="DIR",
        help="when Redis does not answer, keep the events in a spool in DIR (made if missing) "
        "and say so; what waits there is sent first, in order (default: "
        "FORWARDER_SPOOL_DIR, else none: the command fails)",
    )
    spool = commands.add_parser(
        "spool",
        help="send what a producer spool holds (publish --spool, Publisher(spool_dir=...))",
    )
    spool_actions = spool.add_subparsers(dest="action", required=True, metavar="ACTION")
    drain = spool_actions.add_parser(
        "drain", help="send the spool's events to Redis now, in order; print the counts"
    )
    drain.add_argument("directory", metavar="DIR", help="the spool's directory")
    status = commands.add_parser(
        "status", help="show backlog, due, in flight, dead letters, gate, live workers"
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--watch",
        nargs="?",
        type=_positive_seconds,
        const=2.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )
    doctor = commands.add_parser(
        "doctor",
        help="check the configuration, Datadog, Redis and the workers; say what to fix",
        description="Each check is ✔ (fine), • (a reminder), ⚠ (a risk) or ✘ (wrong), with "
        "the fix in one line. Exit code 1 if any check is ✘, else 0.",
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
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
    run = commands.add_parser(
        "run",
        help="run the whole forwarder: worker + beat, and a Redis of its own if none answers",
        description="Runs a worker with an embedded beat, all in one process, and says which "
        "Redis it uses and why. Without FORWARDER_REDIS_URL and with no Redis answering on "
        "localhost:6379 "
        "(without a password), it first starts an embedded Redis (pip install "
        "'dora-forwarder[embedded]') that keeps its data in --data-dir and that only you can "
        "reach: a unix socket, and a password kept in that directory. "
        "Arguments after -- go to `celery worker` unchanged.",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print each request as a JSON line instead of sending it (no DD_API_KEY needed); "
        "events taken count as delivered",
    )
    run.add_argument(
        "--embedded-redis",
        action="store_true",
        help="always start the embedded Redis, even if another answers",
    )
    run.add_argument(
        "--embedded-port",
        type=int,
        metavar="PORT",
        help="also serve the embedded Redis on 127.0.0.1:PORT, with its password (default: "
        "its unix socket only)",
    )
    run.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the embedded Redis keeps its data (default: FORWARDER_DATA_DIR, else "
        f"{default_data_dir()})",
    )
    worker = commands.add_parser(
        "worker",
        help="run a worker with an embedded beat (Celery) on the configured Redis",
        description="Arguments after -- go to `celery worker` unchanged.",
    )
    add_serve_parser(commands)
    run.add_argument(
        "--concurrency",
        "-c",
        type=int,
        help="pumps, as threads of its one process (default: 1, which keeps up with "
        "thousands of events a second; run `worker` on more machines for more)",
    )
    worker.add_argument("--concurrency", "-c", type=int, help="worker processes (default: cores)")
    for command in (run, worker):
        command.add_argument("--loglevel", "-l", help="log level (default: FORWARDER_LOG_LEVEL)")
        command.add_argument("celery_args", nargs="*", help="extra arguments for celery worker")
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
        result = cmd_publish(settings, args.file, sys.stderr, args.kind, args.spool)
    elif args.command == "spool":
        result = cmd_spool_drain(settings, args.directory, sys.stdout, sys.stderr)
    elif args.command == "status":
        result = cmd_status(settings, args.json, args.watch, sys.stdout, sys.stderr)
    elif args.command == "doctor":
        result = cmd_doctor(settings, args.json, sys.stdout)
    elif args.command == "dead-letters":
        result = cmd_dead_letters(settings, args, sys.stdout, sys.stderr)
    elif args.command == "run":
        options = RunOptions(
            dry_run=args.dry_run,
            embedded_redis=args.embedded_redis,
            embedded_port=args.embedded_port,
            data_dir=args.data_dir,
            concurrency=args.concurrency,
            loglevel=args.loglevel,
            celery_args=tuple(args.celery_args),
        )
        result = cmd_run(settings, options, sys.stderr)
    elif args.command == "serve":
        result = cmd_serve(settings, args, sys.stderr)
    else:
        result = cmd_worker(settings, args.concurrency, args.loglevel, args.celery_args, sys.stderr)
    return int(result)
