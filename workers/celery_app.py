"""The Celery app: a beat that ticks, and workers whose task pumps Redis to Datadog.

Events never travel as Celery messages (the Redis list broker can lose them, see
PITFALLS.md B1): they live in a Redis stream and per-incident state. Celery only carries
ticks, so a lost, duplicated or expired tick is harmless.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from celery import Celery

from config import Settings
from forwarder.protocol import RedisKeys
from workers import _logging

PUMP_TASK: Final = "dora.pump"
QUEUE: Final = "dora"
TICK_EXPIRES_S: Final = 10.0
"""A tick older than this is dropped unrun: generous, since workers' clocks may differ."""


class ForwarderCelery(Celery):
    """A Celery app that carries the forwarder's settings to its tasks."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__("dora_forwarder", **kwargs)
        self.settings = settings


class _QuietTicks(logging.Filter):
    """Drop Celery's per-message lines about our own ticks (several a second, no news)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith(f"Task {PUMP_TASK}[") and message.endswith("received")
        ) and not message.startswith(f"Discarding revoked task: {PUMP_TASK}[")


def create_app(settings: Settings) -> ForwarderCelery:
    """The Celery app for ``settings``: broker keys under the deployment's prefix."""
    keys = RedisKeys(settings.key_prefix)
    app = ForwarderCelery(settings, broker=settings.redis_url)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        broker_transport_options={"global_keyprefix": keys.celery_prefix},
        task_default_queue=QUEUE,
        task_ignore_result=True,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Ticks carry no state, so beat keeps its schedule in memory: no schedule file, and
        # several beats in one directory do not fight over it.
        beat_scheduler="celery.beat:Scheduler",
        beat_schedule={
            "pump": {
                "task": PUMP_TASK,
                "schedule": settings.tick_s,
                "options": {"expires": TICK_EXPIRES_S},
            }
        },
        # A pump ends by itself after its budget; the hard limit only catches a hang.
        task_time_limit=settings.task_budget_s + settings.http_timeout_s + 60,
        worker_redirect_stdouts=False,
        # Task events, so that Flower and `celery events` show the pumps (one task every
        # FORWARDER_TASK_BUDGET_S per process: a few events a second at most).
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    _logging.connect(settings)
    quiet = _QuietTicks()
    for name in ("celery.worker.strategy", "celery.worker.request"):
        logging.getLogger(name).addFilter(quiet)
    from workers.tasks import register  # noqa: PLC0415 - tasks need the app first

    register(app)
    return app
