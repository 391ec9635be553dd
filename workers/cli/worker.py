"""``dora-forwarder worker``: a Celery worker with an embedded beat on the configured Redis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

from config import Settings
from workers.cli.common import EXIT_FAILURE, missing_key_message


def cmd_worker(
    settings: Settings,
    concurrency: int | None,
    loglevel: str | None,
    extra: Sequence[str],
    err: IO[str],
) -> int:
    """Run a Celery worker with an embedded beat on the configured Redis."""
    if settings.dd_api_key is None and not settings.dry_run:
        print(missing_key_message(), file=err)
        return EXIT_FAILURE
    return run_celery_worker(concurrency, loglevel, list(extra))


def run_celery_worker(
    concurrency: int | None,
    loglevel: str | None,
    extra: tuple[str, ...] | list[str],
    *,
    one_process: bool = False,
) -> int:
    """Run a Celery worker with an embedded beat, with the settings of the environment.

    ``one_process`` (``run``): a threads pool of one pump (unless told more) and beat as a
    thread. Otherwise a prefork pool, one process per core, and beat in a process of its own.
    """
    import workers  # noqa: PLC0415 - Celery is only loaded for the worker
    from workers.celery_app import BEAT_THREAD_OPTION  # noqa: PLC0415 - the same

    settings = workers.app.settings
    # A dry run's standard output is its requests, one JSON line each: no banner there.
    quiet = ["--quiet"] if settings.dry_run else []
    argv = [*quiet, "worker", f"--loglevel={loglevel or settings.log_level}"]
    if one_process:
        # The pump in a thread, beat in another: one process in all.
        argv += ["--pool=threads", BEAT_THREAD_OPTION, f"--concurrency={concurrency or 1}"]
    else:
        argv.append("--beat")
        if concurrency:
            argv.append(f"--concurrency={concurrency}")
    argv.extend(extra)
    workers.app.worker_main(argv)
    return 0
