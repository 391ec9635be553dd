"""The one task: pump the stream to Datadog for a bounded time, then hand over."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task
from celery.signals import worker_init

from workers._runtime import Runtime
from workers.celery_app import PUMP_TASK, TICK_EXPIRES_S, ForwarderCelery

log = logging.getLogger("dora_forwarder.tasks")

_runtime: Runtime | None = None


def _process_runtime(app: ForwarderCelery) -> Runtime:
    global _runtime  # noqa: PLW0603 - one runtime per process, by design
    if _runtime is None or _runtime.pid != os.getpid():
        _runtime = Runtime(app.settings)
    return _runtime


def register(app: ForwarderCelery) -> None:
    """Register the pump task on ``app``."""

    @app.task(name=PUMP_TASK, bind=True, ignore_result=True)
    def pump(self: Task[Any, Any]) -> dict[str, Any]:
        """Ingest and deliver for ``FORWARDER_TASK_BUDGET_S`` seconds, then queue the next run.

        The continuation keeps a pump running in this process without waiting for the next
        tick; ticks that find every process busy expire unrun.
        """
        report = _process_runtime(app).run(app.settings.task_budget_s)
        pump.apply_async(expires=TICK_EXPIRES_S)
        return {
            "entries": report.entries,
            "dead_entries": report.dead_entries,
            "sent": report.sent,
            **report.outcomes,
        }


@worker_init.connect
def _refuse_without_key(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if isinstance(app, ForwarderCelery) and app.settings.dd_api_key is None:
        raise SystemExit(
            "dora-forwarder: DD_API_KEY is not set; workers need it to deliver events "
            "(export DD_API_KEY=<your Datadog API key>)"
        )
