"""The one task: pump the stream to Datadog for a bounded time, then hand over.

Every tick (beat's, and a pump's continuation) is dated by Redis' clock when it is sent and
judged by it when a worker takes it: hosts' clocks never have to agree (DESIGN.md, I9).
Also the worker's life cycle: checks before start, and a warm shutdown (SIGTERM) that makes
every pool process give its claims back at once instead of holding them to the end.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Final

import redis
from billiard.process import current_process
from celery import Celery, Task
from celery.signals import (
    before_task_publish,
    worker_init,
    worker_shutdown,
    worker_shutting_down,
)
from kombu.exceptions import OperationalError

from config import Settings
from forwarder.connection import redis_client
from forwarder.protocol import RedisKeys
from workers.delivery.records import TickCheck
from workers.delivery.runtime import Runtime
from workers.delivery.stop_flag import StopFlag
from workers.delivery.store import lift_auth_pause
from workers.ops.preflight import Findings, judge_redis

log = logging.getLogger("dora_forwarder.tasks")

PUMP_TASK: Final = "dora.pump"
QUEUE: Final = "dora"
TICK_SENT_HEADER: Final = "dora_tick_sent_ms"
"""Celery message header of a tick: when it was sent, in ms on Redis' clock."""
TICK_EXPIRES_S: Final = 10.0
"""A tick that waited longer than this (Redis' clock, since it was sent) is dropped unrun.

It waited because every worker process was busy pumping; newer ticks follow it."""
TICK_DROPPED_RESULT: Final = "tick_dropped_age_ms"
"""Key of what a dropped tick's task returns (and Celery's success line shows)."""


class ForwarderCelery(Celery):
    """A Celery app that carries the forwarder's settings to its tasks."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__("dora_forwarder", **kwargs)
        self.settings = settings


_runtimes: dict[tuple[int, int], Runtime] = {}
"""Each pump's runtime: one per process (prefork), or per thread (a threads pool), by
(pid, thread): an event loop runs in one thread."""
_runtimes_lock = threading.Lock()
# Made before the pool forks, so that every pool process shares it with the main one.
_WORKER_STOPPING = StopFlag()
_metrics_dir: str | None = None


def _process_runtime(app: ForwarderCelery) -> Runtime:
    key = (os.getpid(), threading.get_ident())  # a forked child starts its own
    with _runtimes_lock:
        runtime = _runtimes.get(key)
        if runtime is None:
            runtime = _runtimes[key] = Runtime(app.settings)
    return runtime


class _RedisClock:
    """Redis' clock, read from whichever process sends ticks (beat, a pool process)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: redis.Redis | None = None

    def now_ms(self) -> int:
        """Redis ``TIME`` in ms (connects on first use; redis-py reconnects after a fork)."""
        if self._client is None:
            self._client = redis_client(
                self._settings.redis_url,
                sentinel_master=self._settings.redis_sentinel_master,
                socket_timeout=5,
                socket_connect_timeout=5,
            )
        seconds, micros = self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000


def _date_ticks(app: ForwarderCelery) -> None:
    """Stamp every tick this process sends with Redis' clock (header ``TICK_SENT_HEADER``).

    Not Celery's ``expires``: that is computed on the sender's clock and judged on the
    worker's, so a sender 10 s behind had every tick discarded. A tick already dated keeps
    its stamp. One app a process: the last call wins.
    """
    clock = _RedisClock(app.settings)

    def on_publish(sender: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
        if sender != PUMP_TASK or headers is None or headers.get(TICK_SENT_HEADER) is not None:
            return
        try:
            headers[TICK_SENT_HEADER] = clock.now_ms()
        except redis.RedisError as exc:
            # The broker is this Redis too, so the tick is likely lost anyway; if not, it runs.
            log.warning(
                "cannot date a tick by Redis' clock (%s); it will run whatever its age", exc
            )

    # A closure has no other reference: a weak one would be collected at once.
    before_task_publish.connect(on_publish, weak=False, dispatch_uid="dora_forwarder.date_ticks")


def tick_sent_ms(value: object) -> int | None:
    """A tick's stamp as ms, or None: sent by hand (``celery call``), undated, or garbled."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return int(value)
    except (ValueError, OverflowError):  # "soon", inf, nan
        return None


def _stale_tick(runtime: Runtime, sent: object) -> TickCheck | None:
    """The check of a tick too old to run (counted; a line at DEBUG), or None if it runs."""
    sent_ms = tick_sent_ms(sent)
    if sent_ms is None:
        return None
    try:
        check = runtime.check_tick(sent_ms, int(TICK_EXPIRES_S * 1000))
    except redis.RedisError:
        return None  # the pump run reports Redis' state itself
    if not check.dropped:
        return None
    # Normal whenever every process is busy, as a pump run outlasts several ticks: the count
    # is in Redis and the metrics, the line only at DEBUG.
    log.debug(
        "%d tick(s) dropped so far by the fleet: this one waited %.2f s in Celery's queue "
        "(Redis' clock), over %g s, while every worker process was busy (or none was up); "
        "harmless, newer ticks follow",
        check.dropped_total,
        check.age_ms / 1000,
        TICK_EXPIRES_S,
    )
    return check


def register(app: ForwarderCelery) -> None:
    """Register the pump task on ``app``, the dating of ticks, and the checks before start.

    Call after the app's logging hooks are connected: the checks log through them.
    """
    worker_init.connect(_check_before_start, dispatch_uid="dora_forwarder.check_before_start")
    _date_ticks(app)

    @app.task(name=PUMP_TASK, bind=True, ignore_result=True)
    def pump(self: Task[Any, Any]) -> dict[str, Any]:
        """Ingest and deliver for ``FORWARDER_TASK_BUDGET_S`` seconds, then queue the next run.

        The continuation keeps a pump running in this process without waiting for the next
        tick. A tick that waited past ``TICK_EXPIRES_S`` (every process was busy) costs one
        Redis round trip and no run: a backlog of ticks never becomes a backlog of runs.
        """
        runtime = _process_runtime(app)
        stale = _stale_tick(runtime, self.request.get(TICK_SENT_HEADER))
        if stale is not None:
            return {TICK_DROPPED_RESULT: stale.age_ms}
        with _sigterm_releases_claims(runtime):
            report = runtime.run(app.settings.task_budget_s, _WORKER_STOPPING)
        # After a Redis error, beat's next tick (within FORWARDER_TICK_S) starts the next run:
        # no tight loop against a Redis that is down.
        if not runtime.pump.stopping and report.redis_error is None:
            try:
                pump.apply_async()  # dated by Redis' clock on its way out (_date_ticks)
            except OperationalError as exc:  # broker down: beat's next tick restarts us
                log.warning("could not queue the next pump run: %s", exc)
        return {
            "entries": report.entries,
            "dead_entries": report.dead_entries,
            "sent": report.sent,
            **report.outcomes,
            **({"redis_error": report.redis_error} if report.redis_error else {}),
        }


def start_pumps(app: ForwarderCelery, count: int) -> None:
    """Queue ``count`` ticks now: a worker's pool processes start pumping at once, rather
    than one process per FORWARDER_TICK_S (at start, and again after the broker came back)."""
    try:
        for _tick in range(count):
            app.tasks[PUMP_TASK].apply_async()  # dated by Redis' clock on its way out
    except OperationalError as exc:  # broker down: beat's ticks start them later
        log.warning("could not queue the first pump runs: %s", exc)


@contextmanager
def _sigterm_releases_claims(runtime: Runtime) -> Iterator[None]:
    """While a pump runs, SIGTERM makes it give its claims back and return first.

    In a pool process billiard's own handler would exit on the spot, failing the task
    (Celery logs WorkerLostError); ours lets the task end normally, and the warm shutdown
    then closes the pool. In the main process (solo pool) Celery's handler only starts
    the warm shutdown, so it runs at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread (threads pool)
        return
    previous = signal.getsignal(signal.SIGTERM)
    in_main_process = current_process().name == "MainProcess"

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        runtime.request_stop()
        if in_main_process and callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@worker_shutting_down.connect
def _forward_warm_shutdown(sig: str = "", how: str = "", **_: Any) -> None:
    """On a warm shutdown, make every pump in every pool process release its claims now.

    A flag the pool processes inherited, rather than signals: SIGTERM would make an idle
    pool process exit on the spot (Celery reports that as an error), and which process is
    busy is not known for certain at the moment the signal arrives.
    """
    _WORKER_STOPPING.set()


def _check_before_start(sender: Any = None, **_: Any) -> None:
    """Refuse to start without a key or on a Redis that cannot work; warn of risky Redis.

    A key refused before (the gate closed for ``auth``) is tried again at once: a worker
    is often (re)started precisely to fix it.
    """
    app = getattr(sender, "app", None)
    if not isinstance(app, ForwarderCelery):
        return
    settings = app.settings
    if settings.dry_run:
        log.warning(
            "dry run: each request is printed instead of sent, and counts as delivered: "
            "events taken from Redis now will not be sent to Datadog later"
        )
    elif settings.dd_api_key is None:
        raise SystemExit(
            "dora-forwarder: DD_API_KEY is not set; workers need it to deliver events "
            "(export DD_API_KEY=<your Datadog API key>)"
        )
    findings = _judge_redis_now(settings)
    if findings is not None:
        for warning in findings.warnings:
            log.warning("%s", warning)
        if findings.errors:
            raise SystemExit("dora-forwarder: " + "; ".join(findings.errors))
    _start_metrics(app)


def _judge_redis_now(settings: Settings) -> Findings | None:
    """Judge the Redis workers will use (None if it cannot be reached yet).

    Lifts an auth pause on the way: a refused key is tried again at once.
    """
    client = redis_client(
        settings.redis_url,
        sentinel_master=settings.redis_sentinel_master,
        socket_connect_timeout=5,
        socket_timeout=5,
    )
    try:
        info = client.info()
        try:
            save = str(client.config_get("save").get("save", ""))
        except redis.ResponseError:  # CONFIG is often disabled on managed Redis
            save = "unknown"
        if lift_auth_pause(client, RedisKeys(settings.key_prefix)):
            log.info("the API key was refused before; probing it again now")
    except redis.RedisError as exc:
        log.warning("cannot check Redis at %s yet: %s", settings.redis_url_for_logs, exc)
        return None
    finally:
        client.close()
    return judge_redis(info, save)


def _start_metrics(app: ForwarderCelery) -> None:
    """Serve /metrics from this (main) process, summing what every pool process counts."""
    global _metrics_dir  # noqa: PLW0603 - made at start, removed at shutdown
    if app.settings.metrics_port == 0:
        return
    from workers.ops import metrics as _metrics  # noqa: PLC0415 - prometheus_client only where it is used

    _metrics_dir = _metrics.prepare_multiprocess_dir()
    _metrics.serve_metrics(app.settings)


@worker_shutdown.connect
def _close_runtimes(**_: Any) -> None:
    """Close the connections of this process' pumps (a threads pool's: prefork pool
    processes have exited by now): an unclosed HTTP client would be reported at exit."""
    pid = os.getpid()
    with _runtimes_lock:
        mine = [runtime for (owner, _), runtime in _runtimes.items() if owner == pid]
        _runtimes.clear()
    for runtime in mine:
        if runtime.running:
            continue  # cannot happen after the pool stopped; never close a loop in use
        try:
            runtime.close()
        except Exception as exc:  # shutting down: say it, go on
            log.warning("closing a pump's connections at shutdown failed: %s", exc)


@worker_shutdown.connect
def _remove_metrics_dir(**_: Any) -> None:
    """The per-process metric files are this worker's alone: delete them with it."""
    if _metrics_dir is not None:
        from workers.ops.metrics import remove_multiprocess_dir  # noqa: PLC0415

        remove_multiprocess_dir(_metrics_dir)


@worker_shutdown.connect
def _say_stopped(sender: Any = None, **_: Any) -> None:
    """The stop's one line in the log, once it is done (Celery prints "Warm shutdown" to
    standard output as it begins), as "<name> ready." was the start's."""
    log.info("%s stopped.", getattr(sender, "hostname", None) or "worker")
