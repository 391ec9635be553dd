"""The yardstick: the forwarder a team writes in an afternoon, for benchmarks to beat.

One Celery task per event, ``task_acks_late``, one shared ``httpx.Client`` per worker process
(created after the fork), ``autoretry_for`` HTTP errors, and ``self.retry(countdown=...)``
with X-RateLimit-Reset on 429 and 5xx. Deliberately ordinary: no dedupe, no coalescing, no
fleet-wide rate limit, retries parked in worker memory. Not part of the product.

    celery -A bench.yardstick worker --concurrency 2
    # producer: bench.yardstick.send_incident.delay(attributes)

Configured from YARDSTICK_REDIS_URL, YARDSTICK_API_URL, YARDSTICK_QUEUE and DD_API_KEY.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from celery import Celery, Task
from celery.signals import worker_process_init

QUEUE = os.environ.get("YARDSTICK_QUEUE", "yardstick")

app = Celery("yardstick", broker=os.environ.get("YARDSTICK_REDIS_URL", "redis://127.0.0.1:6379/15"))
app.conf.update(
    task_acks_late=True,
    task_default_queue=QUEUE,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"global_keyprefix": f"{QUEUE}:"},
    worker_hijack_root_logger=False,
)

_client: httpx.Client | None = None


@worker_process_init.connect
def _new_client(**_: Any) -> None:
    global _client  # noqa: PLW0603 - one client per worker process, as the docs suggest
    _client = httpx.Client(
        base_url=os.environ["YARDSTICK_API_URL"],
        headers={"DD-API-KEY": os.environ["DD_API_KEY"]},
        timeout=10.0,
    )


def client() -> httpx.Client:
    if _client is None:  # solo pool: no process init
        _new_client()
    assert _client is not None
    return _client


@app.task(
    bind=True,
    autoretry_for=(httpx.TransportError,),
    retry_backoff=True,
    max_retries=None,
    name="yardstick.send_incident",
)
def send_incident(self: Task[Any, Any], attributes: dict[str, Any]) -> None:
    response = client().post("/api/v2/dora/failure", json={"data": {"attributes": attributes}})
    if response.status_code == 429 or response.status_code >= 500:
        raise self.retry(countdown=int(response.headers.get("X-RateLimit-Reset", "5")))
    response.raise_for_status()
