"""``dora-forwarder run``: the whole forwarder in one command, for small installs and first tries.

A worker with an embedded beat; and a Redis of its own (``workers.ops.embedded_redis``) when none
is configured and none answers on localhost.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Final

import platformdirs

from config import Settings
from workers.cli.common import EXIT_FAILURE, missing_key_message
from workers.cli.run_serve import ingest_problem, start_ingest
from workers.cli.worker import run_celery_worker
from workers.ops.embedded_redis import EmbeddedRedis, EmbeddedRedisError, answers

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


def default_data_dir() -> Path:
    """Where an embedded Redis keeps its data unless told: the user's data directory."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "redis"


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``run`` was asked for on its command line."""

    dry_run: bool = False
    embedded_redis: bool = False
    embedded_port: int = 6379
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
    try:
        choice = choose_redis(
            url_set=url_set,
            embedded_requested=options.embedded_redis,
            default_answers=not url_set and answers(settings.redis_url),
        )
    except RunConfigError as exc:
        print(f"dora-forwarder: {exc}", file=err)
        return EXIT_FAILURE
    embedded: EmbeddedRedis | None = None
    if choice is RedisChoice.EMBEDDED:
        data_dir = Path(options.data_dir or settings.data_dir or default_data_dir())
        embedded = EmbeddedRedis(data_dir.expanduser().resolve(), options.embedded_port)
        try:
            embedded.start()
        except EmbeddedRedisError as exc:
            reason = "" if options.embedded_redis else "no Redis answers on localhost:6379 and "
            print(
                f"dora-forwarder: {reason}{exc}. Start a Redis, or set FORWARDER_REDIS_URL.",
                file=err,
            )
            return EXIT_FAILURE
        print(
            f"dora-forwarder: started an embedded Redis on 127.0.0.1:{embedded.port}; its "
            f"data (append-only file) is in {embedded.data_dir}",
            file=err,
            flush=True,
        )
        # The worker's settings, its pool processes' and its beat's are read from here.
        os.environ["FORWARDER_REDIS_URL"] = embedded.url
    else:
        print(f"dora-forwarder: using Redis at {settings.redis_url_for_logs}", file=err)
    if settings.dry_run or options.dry_run:
        os.environ["FORWARDER_DRY_RUN"] = "1"
        os.environ["FORWARDER_DRY_RUN_FD"] = str(_requests_only_on_stdout())
    ingest = start_ingest(settings, err)  # with the environment above: the same Redis
    try:
        return run_celery_worker(options.concurrency, options.loglevel, options.celery_args)
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
