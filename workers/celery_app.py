"""The Celery app: a beat that ticks, and workers whose task pumps Redis to Datadog.

Events never travel as Celery messages (the Redis list broker can lose them, see
PITFALLS.md B1): they live in a Redis stream and per-incident state. Celery only carries
ticks, so a lost, duplicated or dropped tick is harmless.
"""

from __future__ import annotations

import atexit
import logging
from typing import Any, Final

import click
from celery import bootsteps
from celery.beat import EmbeddedService
from celery.exceptions import ImproperlyConfigured
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    worker_init,
)
from celery.utils.log import get_multiprocessing_logger

from config import Settings
from config.redis_url import broker_url
from forwarder.protocol import RedisKeys
from forwarder.sentinel_url import is_sentinel_url
from workers.ops.logs import configure_handlers
from workers.ops.routine_logs import ROUTINE_LOGGERS, DemoteRoutine
from workers.tasks import (
    PUMP_TASK,
    QUEUE,
    ForwarderCelery,
    register,
    start_pumps,
)

_ROUTINE_UID: Final = "dora_forwarder.routine_logs"

BEAT_THREAD_OPTION: Final = "--beat-thread"
"""``celery worker`` option of ours: run beat as a thread of the worker's main process."""


class ThreadedBeat(bootsteps.StartStopStep):
    """Beat as a thread of the worker's main process, instead of ``--beat``'s own process.

    For ``dora-forwarder run`` (a threads pool, one process in all): a process less is about
    25 MB less memory. Not with a prefork pool, whose processes are forked from the main one
    (a fork copies only the forking thread, so a lock held by beat's thread would stay held).
    Beat keeps nothing worth a process: ticks carry no state.
    """

    label = "Beat (thread)"
    conditional = True

    def __init__(self, w: Any, beat_thread: bool = False, **kwargs: Any) -> None:
        self.enabled = bool(beat_thread)
        if self.enabled and kwargs.get("beat"):
            raise ImproperlyConfigured(f"{BEAT_THREAD_OPTION} and --beat would run two beats")
        pool = getattr(w.pool_cls, "__module__", str(w.pool_cls))
        if self.enabled and not pool.endswith(("thread", "threads", "solo")):
            raise ImproperlyConfigured(
                f"{BEAT_THREAD_OPTION} needs --pool=threads or solo: a prefork pool forks its "
                "processes from this one, and a fork would copy beat's thread half-way"
            )
        super().__init__(w, **kwargs)

    def create(self, w: Any) -> Any:
        return EmbeddedService(w.app, thread=True, scheduler_cls=w.scheduler)


NO_START_PUMPS_OPTION: Final = "--no-start-pumps"
"""``celery worker`` option of ours: leave starting pumps to beat's ticks (tests of beat)."""


class StartPumps(bootsteps.StartStopStep):
    """Queue one tick per pool process when the consumer starts: pumps start at once.

    The consumer starts again after the broker came back, so this also restarts the pump
    chains a Redis outage broke, without waiting for beat's next tick.
    """

    label = "Start pumps"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, no_start_pumps: bool = False, **kwargs: Any) -> None:
        self.enabled = not no_start_pumps
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        start_pumps(c.app, int(getattr(c.controller, "concurrency", None) or 1))


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's options: the deployment's key prefix, and the primary's name with Sentinel.

    kombu's Sentinel transport gives the URL's password (and database) to the primary only
    and asks the sentinels without one, as ``forwarder.connection`` does.
    """
    options: dict[str, Any] = {"global_keyprefix": RedisKeys(settings.key_prefix).celery_prefix}
    if is_sentinel_url(settings.redis_url):
        options["master_name"] = settings.redis_sentinel_master
    return options


def create_app(settings: Settings) -> ForwarderCelery:
    """The Celery app for ``settings``: broker keys under the deployment's prefix."""
    # kombu reads a password only from the user-info and knows no unix://: say it its way.
    app = ForwarderCelery(settings, broker=broker_url(settings.redis_url))
    app.conf.update(
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_transport_options(settings),
        task_default_queue=QUEUE,
        task_ignore_result=True,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Ticks carry no state, so beat keeps its schedule in memory: no schedule file, and
        # several beats in one directory do not fight over it.
        beat_scheduler="celery.beat:Scheduler",
        # No Celery `expires`: it is set on the sender's clock and judged on the worker's.
        # Each tick is dated by Redis' clock instead, and an old one dropped by the task.
        beat_schedule={"pump": {"task": PUMP_TASK, "schedule": settings.tick_s}},
        # A pump ends by itself after its budget; the hard limit only catches a hang.
        task_time_limit=settings.task_budget_s + settings.http_timeout_s + 60,
        worker_redirect_stdouts=False,
        # Task events, so that Flower and `celery events` show the pumps (one task every
        # FORWARDER_TASK_BUDGET_S per process: a few events a second at most).
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    connect_logging(settings)
    routine = DemoteRoutine(PUMP_TASK)

    def in_a_worker(**_: Any) -> None:
        routine.in_worker = True  # before --beat's process is forked, and before run's thread

    def beat_alone_says_stopped(**_: Any) -> None:
        # `celery beat` logs its start, not its stop (SIGTERM ends its loop silently).
        if not routine.in_worker:
            atexit.register(logging.getLogger("celery.beat").info, "beat: stopped.")

    for signal, receiver in ((worker_init, in_a_worker), (beat_init, beat_alone_says_stopped)):
        signal.disconnect(dispatch_uid=_ROUTINE_UID)  # one app a process; tests make several
        signal.connect(receiver, weak=False, dispatch_uid=_ROUTINE_UID)
    for name in ROUTINE_LOGGERS:
        logger = logging.getLogger(name)
        for stale in [f for f in logger.filters if isinstance(f, DemoteRoutine)]:
            logger.removeFilter(stale)  # one app a process; tests make several
        logger.addFilter(routine)
    for option, text in (
        (BEAT_THREAD_OPTION, "Run beat as a thread of this process (dora-forwarder run)."),
        (NO_START_PUMPS_OPTION, "Leave starting pumps to beat's ticks (tests of beat)."),
    ):
        app.user_options["worker"].add(click.Option([option], is_flag=True, help=text))
    app.steps["worker"].add(ThreadedBeat)
    app.steps["consumer"].add(StartPumps)
    register(app)
    return app


_DISPATCH_UID: Final = "dora_forwarder.logging"


def _set_up_before_worker_init_hooks(sender: Any = None, **_: Any) -> None:
    """Have Celery set up logging now rather than right after the ``worker_init`` hooks.

    Those hooks (the worker's checks before start) log too; before this they went out
    through Python's last-resort handler, unformatted. Celery's own later call finds
    logging set up and leaves it as is, as in a pool process.
    """
    setup = getattr(sender, "setup_logging", None)  # a `celery worker`, not a bare WorkController
    if callable(setup):
        setup()


def connect_logging(settings: Settings) -> None:
    """Configure the handlers of every logger Celery sets up, once it has set them up.

    That covers the root logger (everything that propagates: ours, Celery's, httpx's),
    billiard's own logger and Celery's task logger. The last call wins: one app a process.
    Called before the app's ``worker_init`` hooks run, so that they log through them.
    """
    # Connected once and never moved, so it stays ahead of hooks connected after it.
    worker_init.connect(_set_up_before_worker_init_hooks, dispatch_uid=_DISPATCH_UID)

    def on_root(logger: logging.Logger | None = None, **_: Any) -> None:
        for each in (logger, get_multiprocessing_logger()):
            if each is not None:
                configure_handlers(each, settings)

    def on_task_logger(logger: logging.Logger | None = None, **_: Any) -> None:
        if logger is not None:
            configure_handlers(logger, settings)

    for signal, receiver in (
        (after_setup_logger, on_root),
        (after_setup_task_logger, on_task_logger),
    ):
        signal.disconnect(dispatch_uid=_DISPATCH_UID)
        # A closure has no other reference: a weak one would be collected at once.
        signal.connect(receiver, weak=False, dispatch_uid=_DISPATCH_UID)
