"""The one task: pump the stream to Datadog for a bounded time, then hand over."""

from __future__ import annotations

import logging
import os
from typing import Any

import redis
from celery import Task
from celery.signals import worker_init

from workers._preflight import judge_redis
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
def _check_before_start(sender: Any = None, **_: Any) -> None:
    """Refuse to start without a key or on a Redis that cannot work; warn of risky Redis."""
    app = getattr(sender, "app", None)
    if not isinstance(app, ForwarderCelery):
        return
    settings = app.settings
    if settings.dd_api_key is None:
        raise SystemExit(
            "dora-forwarder: DD_API_KEY is not set; workers need it to deliver events "
            "(export DD_API_KEY=<your Datadog API key>)"
        )
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        info = client.info()
        try:
            save = str(client.config_get("save").get("save", ""))
        except redis.ResponseError:  # CONFIG is often disabled on managed Redis
            save = "unknown"
    except redis.RedisError as exc:
        log.warning("cannot check Redis at %s yet: %s", settings.redis_url_for_logs, exc)
        return
    finally:
        client.close()
    findings = judge_redis(info, save)
    for warning in findings.warnings:
        log.warning("%s", warning)
    if findings.errors:
        raise SystemExit("dora-forwarder: " + "; ".join(findings.errors))
