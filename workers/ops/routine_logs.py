"""Celery's routine lines, moved from INFO to DEBUG: an idle forwarder writes nothing at INFO.

A worker runs a pump task every few seconds per process and beat sends a tick as often, and
Celery gives each a line ("Scheduler: Sending due task", "Task dora.pump[…] received",
"… succeeded in 30.0s: {…}"): about 80 a minute that say nothing, around the lines that
matter (each delivery outcome, gate and breaker changes, warnings). Those lines are not
dropped but demoted: ``--loglevel DEBUG`` shows them again.

Celery-free, like ``workers.ops.logs``: ``workers.celery_app`` puts ``DemoteRoutine`` on the
loggers named in ``ROUTINE_LOGGERS``. A filter on a logger sees the records created there,
before any handler, so a demoted record is judged against the DEBUG level of its logger.
"""

from __future__ import annotations

import logging
from typing import Final

ROUTINE_LOGGERS: Final = (
    "celery.beat",
    "celery.worker.strategy",
    "celery.app.trace",
    "celery.worker.consumer.connection",
    "celery.worker.consumer.mingle",
    "celery.worker.control",
)
"""The loggers whose routine INFO lines ``DemoteRoutine`` moves to DEBUG."""

_ROUTINE_PREFIXES: Final = (
    "Scheduler: Sending due task ",  # beat, every tick
    "mingle: ",  # the neighbour search at start ("searching", "all alone")
    "sync with ",  # its other side: a running worker answering a new one's search
)
_BEAT_START_STOP: Final = ("beat: Starting...", "beat: Shutting down...")
"""Routine only for a beat inside a worker (``--beat``, ``run``), whose "ready." and
"stopped." lines say it; a beat of its own (``celery beat``) has no other."""


def _demoted(record: logging.LogRecord) -> bool:
    """Mark ``record`` DEBUG; whether its logger writes DEBUG now (a filter's answer)."""
    record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
    return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class DemoteRoutine(logging.Filter):
    """Move routine INFO lines about ``task``'s runs and beat's ticks to DEBUG.

    Routine: beat sending a tick, a pump run received or succeeded (its outcomes have lines
    of their own), an embedded beat's start and stop, mingle's neighbour search (on both
    sides), and the first broker connection of the process (the worker's "ready." line
    follows it). A later "Connected to" says the broker is back after an outage, and stays
    at INFO; so does anything else, such as a failed run or a discarded tick.
    """

    def __init__(self, task: str) -> None:
        super().__init__()
        self._task_line = f"Task {task}["
        self._connected_before = False
        self.in_worker = False
        """Set once this process is (or was forked from) a worker: its beat is embedded."""

    def _routine(self, message: str) -> bool:
        if message.startswith(self._task_line):
            return message.endswith(" received") or "] succeeded in " in message
        if message.startswith("Connected to "):
            first, self._connected_before = not self._connected_before, True
            return first
        if message.startswith(_BEAT_START_STOP):
            return self.in_worker
        return message.startswith(_ROUTINE_PREFIXES)

    def filter(self, record: logging.LogRecord) -> bool:
        """Demote ``record`` if routine; keep it if its logger writes at its level now."""
        if record.levelno != logging.INFO:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken record: the handler reports it, as it would without us
            return True
        if not self._routine(message):
            return True
        return _demoted(record)


class QuietHealthChecks(logging.Filter):
    """uvicorn's access line of a successful ``GET <path>`` (a probe, every few seconds from
    Kubernetes or compose) moved to DEBUG; a failing one (503: Redis does not answer) stays.

    On the ``uvicorn.access`` logger, whose records carry (client, method, path with its
    query, HTTP version, status) as their arguments.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def filter(self, record: logging.LogRecord) -> bool:
        """Demote a 2xx access line of the health path; keep it if DEBUG is on."""
        args = record.args
        if record.levelno != logging.INFO or not isinstance(args, tuple) or len(args) != 5:
            return True
        path, status = args[2], args[4]
        if path != self._path or not isinstance(status, int) or not 200 <= status < 300:
            return True
        return _demoted(record)
