"""What each worker process owns: an event loop, a Redis pool, an HTTP client, a pump.

Built on first use inside the process that runs tasks (after Celery forks its children),
never in the parent: sockets and event loops do not survive a fork.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

from config import Settings
from forwarder.connection import async_redis_client
from forwarder.protocol import RedisKeys
from forwarder.replicas import Replicas
from workers.delivery.backoff import BackoffPolicy
from workers.delivery.breaker import BreakerPolicy
from workers.delivery.observer import NoObserver, PumpObserver
from workers.delivery.pump import Pump, PumpConfig, PumpReport
from workers.delivery.records import TickCheck
from workers.delivery.sender import DatadogSender, PrintingSender, Sender, default_transport
from workers.delivery.settlement import SettlementPolicy
from workers.delivery.store import Store

SHUTDOWN_POLL_S = 0.05
"""How often a running pump looks whether its worker is shutting down (bounds the release)."""

REDIS_SOCKET_TIMEOUT_S = 10.0
"""Above the longest XREADGROUP BLOCK (1 s) so that a blocked read is never cut short."""


# httpx logs every request at INFO; the pump logs each outcome already.
logging.getLogger("httpx").setLevel(logging.WARNING)


class MissingApiKeyError(RuntimeError):
    """Workers need DD_API_KEY to deliver."""


def consumer_name() -> str:
    """This process's name in the consumer group: host and pid, unique in a fleet."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pump_config(settings: Settings) -> PumpConfig:
    """The pump's view of the settings, in milliseconds where Redis wants them."""
    return PumpConfig(
        consumer=consumer_name(),
        ingest_batch=settings.ingest_batch,
        max_in_flight=settings.max_in_flight,
        lease_ms=int(settings.lease_s * 1000),
        reclaim_idle_ms=int(settings.reclaim_idle_s * 1000),
        retention_ms=int(settings.retention_s * 1000),
        finished_retention_ms=int(settings.finished_retention_s * 1000),
        policy=SettlementPolicy(
            backoff=BackoffPolicy(settings.backoff_base_s, settings.backoff_max_s),
            orphan_wait_ms=int(settings.orphan_wait_s * 1000),
            max_age_ms=int(settings.max_age_s * 1000),
            auth_pause_s=settings.auth_pause_s,
            # A dry run prints PATCH and DELETE too: it needs no key.
            has_app_key=settings.dd_app_key is not None or settings.dry_run,
            patch_wait_ms=int(settings.patch_wait_s * 1000),
            patch_by_version=settings.patch_by_version,
        ),
        # While nothing is known about limits, one request probes: it holds the gate no
        # longer than it can take.
        probe_ms=int((settings.http_timeout_s + 1) * 1000),
        ceiling_per_s=settings.max_requests_per_s,
        breaker=BreakerPolicy(
            failures=settings.breaker_failures,
            probe_ms=int(settings.breaker_probe_s * 1000),
            probe_max_ms=int(settings.breaker_probe_max_s * 1000),
        ),
    )


def datadog_sender(settings: Settings) -> Sender:
    """The sender that talks to Datadog (or to ``FORWARDER_API_URL``), or prints (dry run)."""
    if settings.dry_run:
        return PrintingSender(base_url=settings.api_base_url, fd=settings.dry_run_fd)
    if settings.dd_api_key is None:
        raise MissingApiKeyError("DD_API_KEY is not set: workers need it to deliver events")
    return DatadogSender(
        base_url=settings.api_base_url,
        api_key=settings.dd_api_key,
        app_key=settings.dd_app_key,
        timeout_s=settings.http_timeout_s,
        transport=default_transport(settings.max_in_flight),
    )


def _observer(settings: Settings) -> PumpObserver:
    """Prometheus counters when the worker serves metrics; nothing otherwise."""
    if settings.metrics_port == 0:
        return NoObserver()
    # Imported here, in the pool process: prometheus_client must see the multiprocess
    # directory that the worker's start-up hook set before the pool forked.
    from workers.ops.metrics import PrometheusObserver  # noqa: PLC0415

    return PrometheusObserver()


class Runtime:
    """One per process: runs the pump on the process's own event loop."""

    def __init__(self, settings: Settings, sender: Sender | None = None) -> None:
        self.pid = os.getpid()
        self.running = False
        self.loop = asyncio.new_event_loop()
        client = async_redis_client(
            settings.redis_url,
            sentinel_master=settings.redis_sentinel_master,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
            health_check_interval=30,
        )
        self.observer = _observer(settings)
        self.store = Store(
            client,
            RedisKeys(settings.key_prefix),
            Replicas.of(settings.publish_replicas, settings.publish_replicas_timeout_s),
            self.observer.replica_shortfall,
        )
        self.pump = Pump(
            self.store, sender or datadog_sender(settings), pump_config(settings), self.observer
        )

    def check_tick(self, sent_ms: int, max_age_ms: int) -> TickCheck:
        """Judge a tick's age by Redis' clock; a dropped one is counted (Redis, metrics)."""
        check = self.loop.run_until_complete(self.store.check_tick(sent_ms, max_age_ms))
        if check.dropped:
            self.observer.tick_dropped()
        return check

    def run(self, budget_s: float, shutting_down: Callable[[], bool] | None = None) -> PumpReport:
        """Run the pump for ``budget_s`` seconds on this process's loop.

        ``shutting_down`` is polled while it runs: once it answers True the pump gives its
        claims back and returns, as on SIGTERM.
        """
        self.running = True
        try:
            return self.loop.run_until_complete(self._run(budget_s, shutting_down))
        finally:
            self.running = False

    async def _run(self, budget_s: float, shutting_down: Callable[[], bool] | None) -> PumpReport:
        watcher = asyncio.create_task(self._watch(shutting_down)) if shutting_down else None
        try:
            return await self.pump.run(budget_s)
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _watch(self, shutting_down: Callable[[], bool]) -> None:
        # The flag lives in another process's hands (a multiprocessing.Event): it can only
        # be polled.
        while not shutting_down():  # noqa: ASYNC110
            await asyncio.sleep(SHUTDOWN_POLL_S)
        self.pump.request_stop()

    def request_stop(self) -> None:
        """Make a running pump give back its claims and return (from a signal handler)."""
        if self.running:
            # From a signal handler: the loop may be inside select(); wake it safely.
            self.loop.call_soon_threadsafe(self.pump.request_stop)
