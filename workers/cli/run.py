"""``dora-forwarder run``: the whole forwarder in one command, for small installs and first tries.

A worker with an embedded beat; and a Redis of its own (``workers.ops.embedded_redis``) when none
is configured and none answers on localhost. It says which Redis it uses and why
(``workers.cli.run_redis``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from config import Settings
from workers.cli.common import EXIT_FAILURE, missing_key_message
from workers.cli.run_redis import (
    OPEN_REDIS_WARNING,
    RedisChoice,
    RunConfigError,
    choose_redis,
    default_data_dir,
    start_embedded,
    why,
)
from workers.cli.run_serve import ingest_problem, start_ingest
from workers.cli.worker import run_celery_worker
from workers.ops.embedded_redis import EmbeddedRedis, Probe, probe

__all__ = [
    "RedisChoice",
    "RunConfigError",
    "RunOptions",
    "choose_redis",
    "cmd_run",
    "default_data_dir",
]


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``run`` was asked for on its command line."""

    dry_run: bool = False
    embedded_redis: bool = False
    embedded_port: int | None = None
    """Also listen on 127.0.0.1:PORT (with the password); None: the unix socket only."""
    data_dir: str | None = None
    concurrency: int | None = None
    loglevel: str | None = None
    celery_args: tuple[str, ...] = ()


def cmd_run(settings: Settings, options: RunOptions, err: IO[str]) -> int:
    """Run worker + beat, on an embedded Redis when there is no other; return an exit code."""
    if not (settings.dry_run or options.dry_run) and settings.dd_api_key is None:
        print(missing_key_message(), file=err)
        return EXIT_FAILURE
    if (problem := ingest_problem(settings)) is not None:
        print(problem, file=err)
        return EXIT_FAILURE
    url_set = "redis_url" in settings.model_fields_set
    asked = options.embedded_redis
    default = Probe.SILENT if url_set or asked else probe(settings.redis_url)
    try:
        choice = choose_redis(
            url_set=url_set, embedded_requested=asked, default_answers=default is Probe.ANSWERS
        )
    except RunConfigError as exc:
        print(f"dora-forwarder: {exc}", file=err)
        return EXIT_FAILURE
    reason = why(
        url_set=url_set,
        embedded_requested=asked,
        default=default,
        default_url=settings.redis_url_for_logs,
    )
    embedded: EmbeddedRedis | None = None
    if choice is RedisChoice.EMBEDDED:
        data_dir = Path(options.data_dir or settings.data_dir or default_data_dir())
        embedded = EmbeddedRedis(data_dir.expanduser().resolve(), options.embedded_port)
        if not start_embedded(embedded, reason, err):
            return EXIT_FAILURE
        # The worker's settings, its pool processes', its beat's and serve's are read from
        # here (a child's environment is readable by this user alone).
        os.environ["FORWARDER_REDIS_URL"] = embedded.url
    else:
        print(f"dora-forwarder: Redis: {settings.redis_url_for_logs} ({reason})", file=err)
        if not url_set:
            print(OPEN_REDIS_WARNING, file=err)
    if settings.dry_run or options.dry_run:
        os.environ["FORWARDER_DRY_RUN"] = "1"
        os.environ["FORWARDER_DRY_RUN_FD"] = str(_requests_only_on_stdout())
    ingest = start_ingest(settings, err)  # with the environment above: the same Redis
    try:
        return run_celery_worker(
            options.concurrency, options.loglevel, options.celery_args, one_process=True
        )
    finally:
        if ingest is not None:
            ingest.stop()
        if embedded is not None:
            embedded.stop()
            print(f"dora-forwarder: stopped the embedded Redis ({embedded.data_dir})", file=err)


def _requests_only_on_stdout() -> int:
    """Keep standard output for the dry run's requests; send everything else to stderr.

    Celery writes some notices straight to the standard output's file descriptor (the
    shutdown line), so the descriptor itself is moved: the requests go to a duplicate of
    it, which the pool processes inherit, and descriptor 1 becomes standard error.
    """
    sys.stdout.flush()
    requests_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return requests_fd
