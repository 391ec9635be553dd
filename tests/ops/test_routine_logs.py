"""Celery's routine lines go to DEBUG; everything else stays where it was."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from config import load_settings
from workers.celery_app import create_app
from workers.ops.routine_logs import ROUTINE_LOGGERS, DemoteRoutine, QuietHealthChecks

TASK = "dora.pump"


@pytest.fixture
def writes() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger with the filter and a handler at NOTSET, as Celery sets them up."""
    logger = logging.getLogger("tests.routine_logs")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    routine = DemoteRoutine(TASK)
    routine.in_worker = True  # as in a worker (and its beat); see the standalone beat below
    logger.addFilter(routine)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)
    logger.filters.clear()
    logger.setLevel(logging.NOTSET)


ROUTINE = (
    "Scheduler: Sending due task pump (dora.pump)",
    f"Task {TASK}[1f2e] received",
    f"Task {TASK}[1f2e] succeeded in 30.02s: {{'entries': 0, 'dead_entries': 0, 'sent': 0}}",
    f"Task {TASK}[1f2e] succeeded in 0.002s: {{'tick_dropped_age_ms': 31012}}",
    "beat: Starting...",
    "beat: Shutting down...",
    "mingle: searching for neighbors",
    "mingle: all alone",
    "sync with celery@other",
)
KEPT = (
    f"Task {TASK}[1f2e] raised unexpected: RuntimeError('boom')",
    f"Discarding revoked task: {TASK}[1f2e]",
    "Task other.task[1f2e] received",
    "celery@vm ready.",
    "delivered incident=incident-1 status=202 attempt=1",
    "beat pidbox: Connected to redis://:**@127.0.0.1:6379/15.",
)


@pytest.mark.parametrize("message", ROUTINE)
def test_routine_lines_are_not_written_at_info(
    writes: tuple[logging.Logger, io.StringIO], message: str
) -> None:
    logger, out = writes
    logger.setLevel(logging.INFO)
    logger.info(message)
    assert out.getvalue() == ""


@pytest.mark.parametrize("message", ROUTINE)
def test_routine_lines_are_written_at_debug_as_debug(
    writes: tuple[logging.Logger, io.StringIO], message: str
) -> None:
    """Moved, not dropped: --loglevel DEBUG shows them, marked DEBUG."""
    logger, out = writes
    logger.setLevel(logging.DEBUG)
    logger.info(message)
    assert out.getvalue() == f"DEBUG {message}\n"


@pytest.mark.parametrize("message", KEPT)
def test_other_lines_keep_their_level(
    writes: tuple[logging.Logger, io.StringIO], message: str
) -> None:
    logger, out = writes
    logger.setLevel(logging.INFO)
    logger.info(message)
    assert out.getvalue() == f"INFO {message}\n"


def test_only_the_first_broker_connection_is_routine(
    writes: tuple[logging.Logger, io.StringIO],
) -> None:
    """The first is followed by "ready."; a later one says the broker is back after an outage."""
    logger, out = writes
    logger.setLevel(logging.INFO)
    logger.info("Connected to %s", "redis://:**@127.0.0.1:6379/15")
    logger.info("Connected to %s", "redis://:**@127.0.0.1:6379/15")
    assert out.getvalue() == "INFO Connected to redis://:**@127.0.0.1:6379/15\n"


@pytest.mark.parametrize("message", ["beat: Starting...", "beat: Shutting down..."])
def test_a_beat_of_its_own_keeps_its_start_and_stop(
    writes: tuple[logging.Logger, io.StringIO], message: str
) -> None:
    """`celery beat` alone has no "ready." or "stopped." line of a worker to stand for them."""
    logger, out = writes
    logger.setLevel(logging.INFO)
    for each in logger.filters:
        assert isinstance(each, DemoteRoutine)
        each.in_worker = False
    logger.info(message)
    assert out.getvalue() == f"INFO {message}\n"


def test_a_broken_record_is_left_to_the_handler() -> None:
    """A message that cannot be formatted is not the filter's to raise on."""
    record = logging.LogRecord("celery.beat", logging.INFO, __file__, 1, "%d", ("x",), None)
    assert DemoteRoutine(TASK).filter(record) is True


def test_warnings_are_never_demoted(writes: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = writes
    logger.setLevel(logging.INFO)
    logger.warning("mingle: something unexpected")
    assert out.getvalue() == "WARNING mingle: something unexpected\n"


def test_the_app_puts_one_filter_on_each_routine_logger(redis_url: str, prefix: str) -> None:
    """Celery's own loggers, named as in Celery's modules; a second app replaces the filter."""
    for _ in range(2):
        create_app(load_settings(redis_url=redis_url, key_prefix=prefix, metrics_port=0)).close()
    for name in ROUTINE_LOGGERS:
        filters = logging.getLogger(name).filters
        assert [type(f) for f in filters].count(DemoteRoutine) == 1, name


@pytest.mark.parametrize(
    ("path", "status", "level"),
    [
        ("/health", 200, "DEBUG"),  # a probe's answer: no news
        ("/health", 503, "INFO"),  # Redis does not answer: news
        ("/api/v2/dora/failure", 202, "INFO"),
        ("/health?x=1", 200, "INFO"),  # not what a probe asks
    ],
)
def test_only_healthy_answers_to_probes_leave_the_access_log(
    path: str, status: int, level: str
) -> None:
    logger = logging.getLogger("tests.routine_logs.access")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.addFilter(QuietHealthChecks("/health"))
    logger.propagate = False
    try:
        for debug in (False, True):
            logger.setLevel(logging.DEBUG if debug else logging.INFO)
            logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", path, "1.1", status)
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
    lines = out.getvalue().splitlines()
    line = f'{level} 127.0.0.1:5 - "GET {path} HTTP/1.1" {status}'
    assert lines == ([line] if level == "DEBUG" else [line, line])
