"""Prometheus metrics: what each pool process did, and the fleet's state read from Redis.

Celery's prefork pool runs the pumps in child processes, so counters and histograms use
prometheus-client's multiprocess mode: each process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` and the worker's main process sums them when scraped. The
worker's start-up hook calls ``prepare_multiprocess_dir`` before the pool forks, and pool
processes create their metrics on first use, after the fork.

The fleet-wide gauges (backlog, dead letters, gate, live workers) are read from Redis at
scrape time: every worker of a fleet reports the same values, so aggregate them with max().
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Final

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from config import Settings
from forwarder.connection import redis_client
from forwarder.protocol import RedisKeys
from workers.delivery.gate import REASON_AUTH, REASON_RATE_LIMIT
from workers.delivery.records import Attempt, Claim, Settlement, Verdict
from workers.ops.status import Status, live_window_ms, read_status

log = logging.getLogger("dora_forwarder.metrics")

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
NAMESPACE: Final = "dora_forwarder"
SCRAPE_REDIS_TIMEOUT_S: Final = 2.0
"""A scrape gives up on Redis after this long and reports ``dora_forwarder_redis_up 0``."""

HTTP_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENCY_BUCKETS_S: Final = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    *(300, 900, 3600, 6 * 3600, 24 * 3600, 3 * 24 * 3600),
)
"""Publish to delivery spans milliseconds (healthy) to days (an outage, then the backlog)."""

GATE_REASONS: Final = (REASON_RATE_LIMIT, REASON_AUTH)


class PrometheusObserver:
    """Counts a pump's work into Prometheus metrics (a ``PumpObserver``).

    ``registry`` is None under multiprocess mode (the files carry the values); tests give
    a registry of their own.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.deliveries = Counter(
            "deliveries",
            "Settled delivery attempts, by outcome and HTTP status code "
            "(error: no answer; none: not sent)",
            ["outcome", "status_code"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.entries = Counter(
            "ingested_entries",
            "Stream entries folded into incident state",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.poison = Counter(
            "poison_entries",
            "Stream entries no worker could use, turned into dead letters",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.http_seconds = Histogram(
            "http_request_duration_seconds",
            "Time of one request to the DORA API, as the worker saw it",
            namespace=NAMESPACE,
            buckets=HTTP_BUCKETS_S,
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "publish_to_delivery_seconds",
            "From the publish of an incident's newest event to Datadog's 2xx for it",
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.ticks_dropped = Counter(
            "ticks_dropped",
            "Beat ticks dropped unrun: they waited in Celery's queue past their expiry "
            "(Redis' clock) while every worker process was busy",
            namespace=NAMESPACE,
            registry=registry,
        )

        self.replica_shortfalls = Counter(
            "replica_shortfalls",
            "Folds and settlements stored on the primary but acknowledged by fewer replicas "
            "than FORWARDER_PUBLISH_REPLICAS within its timeout (work went on)",
            ["operation"],
            namespace=NAMESPACE,
            registry=registry,
        )

    def folded(self, entries: int, poison: int) -> None:
        """Count a folded batch."""
        self.entries.inc(entries - poison)
        if poison:
            self.poison.inc(poison)

    def settled(self, claim: Claim, settlement: Settlement, attempt: Attempt | None) -> None:
        """Count a settlement and time its request."""
        if attempt is None:
            code = "none"
        else:
            code = str(attempt.status) if attempt.status is not None else "error"
            self.http_seconds.observe(attempt.elapsed_s)
        self.deliveries.labels(settlement.verdict, code).inc()
        if settlement.verdict == Verdict.DELIVERED and claim.published_ms is not None:
            waited_s = (claim.claimed_at_ms - claim.published_ms) / 1000 + (
                attempt.elapsed_s if attempt else 0.0
            )
            self.delivery_seconds.observe(max(0.0, waited_s))

    def tick_dropped(self) -> None:
        """Count a tick dropped unrun."""
        self.ticks_dropped.inc()

    def replica_shortfall(self, operation: str) -> None:
        """Count a write too few replicas acknowledged."""
        self.replica_shortfalls.labels(operation).inc()


class FleetCollector(Collector):
    """Gauges of the whole fleet's state, read from Redis at each scrape."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._keys = RedisKeys(settings.key_prefix)
        # One pooled client for every scrape (redis-py's are thread-safe and reconnect).
        self._client = redis_client(
            settings.redis_url,
            sentinel_master=settings.redis_sentinel_master,
            socket_timeout=SCRAPE_REDIS_TIMEOUT_S,
            socket_connect_timeout=SCRAPE_REDIS_TIMEOUT_S,
        )

    def collect(self) -> Iterator[Metric]:
        """Read ``status`` from Redis; on failure only ``redis_up 0``."""
        up = GaugeMetricFamily(
            f"{NAMESPACE}_redis_up", "Whether this scrape could read the fleet's state from Redis"
        )
        try:
            status = read_status(
                self._client,
                self._keys,
                live_window_ms(self._settings),
                self._settings.publish_replicas,
            )
        except redis.RedisError as exc:
            log.warning("metrics: cannot read the fleet's state from Redis: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, text, value in (
            (
                "backlog_entries",
                "Stream entries not yet folded (unread and being folded)",
                status.backlog,
            ),
            ("due_incidents", "Incidents due for delivery now", status.due_now),
            (
                "scheduled_incidents",
                "Incidents waiting for a retry or for their start",
                status.scheduled,
            ),
            (
                "in_flight_incidents",
                "Incidents claimed by a worker, request in flight",
                status.in_flight,
            ),
            (
                "dead_letters",
                "Dead letters kept (see dora-forwarder dead-letters list)",
                status.dead_letters,
            ),
            (
                "live_workers",
                "Worker processes that reported in the live window",
                len(status.live_workers),
            ),
            (
                "gate_open",
                "1 while the fleet may send, 0 while the gate is closed",
                int(status.gate_open),
            ),
            (
                "connected_replicas",
                "Replicas connected to the Redis in use (INFO replication: connected_slaves)",
                status.replication.connected_replicas,
            ),
            (
                "replicas_wanted",
                "Replicas each write waits for (FORWARDER_PUBLISH_REPLICAS)",
                status.replication.wanted,
            ),
        ):
            yield GaugeMetricFamily(f"{NAMESPACE}_{name}", text, value=value)
        closed = GaugeMetricFamily(
            f"{NAMESPACE}_gate_closed_seconds",
            "Seconds until the gate reopens, by why it closed (0 when open for that reason)",
            labels=["reason"],
        )
        for reason in GATE_REASONS:
            remaining_ms = 0
            if not status.gate_open and status.gate_reason == reason:
                remaining_ms = (status.gate_closed_until_ms or 0) - status.now_ms
            closed.add_metric([reason], remaining_ms / 1000)
        yield closed
        yield from _breaker_metrics(status)
        yield from _operation_metrics(status)


def _operation_metrics(status: Status) -> Iterator[Metric]:
    """PATCH and DELETE waiting for the application key; same-second deployments."""
    yield GaugeMetricFamily(
        f"{NAMESPACE}_app_key_waiting",
        "PATCH and DELETE operations waiting for a usable application key (DD_APP_KEY)",
        value=status.app_key_waiting,
    )
    paused_ms = max(0, (status.app_key_paused_until_ms or 0) - status.now_ms)
    yield GaugeMetricFamily(
        f"{NAMESPACE}_app_key_paused_seconds",
        "Seconds until PATCH and DELETE go again after Datadog refused the application key",
        value=paused_ms / 1000,
    )
    yield CounterMetricFamily(
        f"{NAMESPACE}_same_second_deployments",
        "Deployments dead-lettered: another one of their service and env holds that second",
        value=status.same_second_total,
    )


def _breaker_metrics(status: Status) -> Iterator[Metric]:
    """The circuit breaker's gauges and its lifetime count of openings, fleet-wide."""
    for name, text, value in (
        (
            "breaker_open",
            "1 while the circuit breaker holds the fleet back (the API looks down): "
            "one probe at a time",
            int(status.breaker_open),
        ),
        (
            "breaker_consecutive_failures",
            "Outage answers (5xx, 408, no answer) in a row across the fleet",
            status.breaker_failures,
        ),
        ("breaker_probes", "Probes sent since the breaker opened", status.breaker_probes),
    ):
        yield GaugeMetricFamily(f"{NAMESPACE}_{name}", text, value=value)
    yield CounterMetricFamily(
        f"{NAMESPACE}_breaker_opened",
        "Times the circuit breaker opened",
        value=status.breaker_opened_total,
    )


def prepare_multiprocess_dir() -> str | None:
    """Give this worker a fresh multiprocess directory unless one is set; return ours.

    Call before anything imports ``prometheus_client``; the value is inherited by the pool
    processes forked later. Returns the directory to delete at shutdown (None if the
    operator set ``PROMETHEUS_MULTIPROC_DIR``: theirs to manage).
    """
    if os.environ.get(MULTIPROC_ENV):
        return None
    directory = tempfile.mkdtemp(prefix="dora-forwarder-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    # This module imports prometheus_client, so the choice of value class was made before
    # the variable existed: make it again (it is read when each metric is created).
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def remove_multiprocess_dir(directory: str | None) -> None:
    """Delete a directory made by ``prepare_multiprocess_dir``."""
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def serve_metrics(settings: Settings) -> bool:
    """Serve ``/metrics`` on ``FORWARDER_METRICS_HOST:PORT`` from a daemon thread.

    A port already in use (a second worker on the machine) costs a warning, not the worker.
    """
    if settings.metrics_port == 0:
        return False
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(FleetCollector(settings))
    try:
        start_http_server(settings.metrics_port, settings.metrics_host, registry=registry)
    except OSError as exc:
        log.warning(
            "metrics: cannot listen on %s:%d (%s); this worker serves no metrics. "
            "Set FORWARDER_METRICS_PORT to a free port, or 0 to turn metrics off.",
            settings.metrics_host,
            settings.metrics_port,
            exc.strerror or exc,
        )
        return False
    log.info(
        "metrics: serving Prometheus metrics on http://%s:%d/metrics",
        settings.metrics_host,
        settings.metrics_port,
    )
    return True
