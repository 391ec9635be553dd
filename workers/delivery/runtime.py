"""What each pump owns: an event loop, a Redis pool, an HTTP client.

One per pool process (prefork), or per pool thread (``run``'s threads pool). Built on first
use where tasks run (after Celery forks its children), never in the parent: sockets and
event loops do not survive a fork.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from dataclasses import dataclass

from config import Settings
from forwarder.connection import async_redis_client
from forwarder.protocol import RedisKeys
from forwarder.replicas import Replicas
from workers.delivery.backoff import BackoffPolicy
from workers.delivery.breaker import BreakerPolicy
from workers.delivery.observer import NoObserver, PumpObserver
from workers.delivery.pump import Pump, PumpConfig, PumpReport
from workers.delivery.records import TickCheck
from workers.delivery.sender import DatadogSender, PrintingSender, Sender
from workers.delivery.settlement import SettlementPolicy
from workers.delivery.stop_flag import StopFlag
from workers.delivery.store import Store

REDIS_SOCKET_TIMEOUT_S = 10.0
"""Above the longest XREADGROUP BLOCK (``HEARTBEAT_EVERY_S``, 5 s): never cuts a read short."""


class MissingApiKeyError(RuntimeError):
    """Workers need DD_API_KEY to deliver."""


@dataclass
class _ProcessPumps:
    """What the pumps of one process share: a threads pool runs several in one."""

    made: int = 0
    """Pumps made so far (each one's number is part of its consumer name)."""
    observer: PumpObserver | None = None
    """The metrics observer, made by the first pump that needs one."""


_per_process: dict[int, _ProcessPumps] = {}
"""By pid: a forked child inherits its parent's entry, and starts its own."""
_per_process_lock = threading.Lock()  # a threads pool's first ticks come to every thread at once


def _this_process() -> _ProcessPumps:
    """This process' record (call with ``_per_process_lock`` held)."""
    return _per_process.setdefault(os.getpid(), _ProcessPumps())


def consumer_name() -> str:
    """A new pump's name in the consumer group, unique in a fleet: host and pid, and from a
    process' second pump on (a threads pool) its number, ``host:pid-2``.

    The host is everything before the last ``:`` (``status`` counts live workers by host).
    """
    with _per_process_lock:
        shared = _this_process()
        shared.made += 1
        made = shared.made
    return f"{socket.gethostname()}:{os.getpid()}" + (f"-{made}" if made > 1 else "")


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
        max_connections=settings.max_in_flight,
    )


def _observer(settings: Settings) -> PumpObserver:
    """Prometheus counters when the worker serves metrics; nothing otherwise.

    One per process, shared by its pumps: in multiprocess mode each process writes its
    counts to one file, and two sets of counters would overwrite each other's totals.
    """
    if settings.metrics_port == 0:
        return NoObserver()
    # Imported here, in the pool process: prometheus_client must see the multiprocess
    # directory that the worker's start-up hook set before the pool forked.
    from workers.ops.metrics import PrometheusObserver  # noqa: PLC0415

    with _per_process_lock:
        shared = _this_process()
        if shared.observer is None:
            shared.observer = PrometheusObserver()
        return shared.observer


class Runtime:
    """One per pump: a process' (prefork), or a thread's (``run``'s threads pool); runs the
    pump on an event loop of its own."""

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

    def run(self, budget_s: float, stop_flag: StopFlag | None = None) -> PumpReport:
        """Run the pump for ``budget_s`` seconds on this process's loop.

        Once ``stop_flag`` is raised (a warm shutdown, in any process) the pump gives its
        claims back and returns, as on SIGTERM.
        """
        self.running = True
        try:
            return self.loop.run_until_complete(self._run(budget_s, stop_flag))
        finally:
            self.running = False

    async def _run(self, budget_s: float, stop_flag: StopFlag | None) -> PumpReport:
        if stop_flag is None:
            return await self.pump.run(budget_s)
        # Level-triggered: a flag raised before the run starts fires at the run's first
        # await, once the pump is ready to hear it.
        fd = stop_flag.fileno()

        def on_stop() -> None:
            # The pipe stays readable: watch it no more, or the loop would spin on it.
            self.loop.remove_reader(fd)
            self.pump.request_stop()

        self.loop.add_reader(fd, on_stop)
        try:
            return await self.pump.run(budget_s)
        finally:
            self.loop.remove_reader(fd)

    def close(self) -> None:
        """Close the HTTP client and Redis connections, then the loop (the pump is done)."""
        try:
            self.loop.run_until_complete(self.pump.aclose())
        finally:
            self.loop.close()

    def request_stop(self) -> None:
        """Make a running pump give back its claims and return (from a signal handler)."""
        if self.running:
            # From a signal handler: the loop may be inside select(); wake it safely.
            self.loop.call_soon_threadsafe(self.pump.request_stop)
