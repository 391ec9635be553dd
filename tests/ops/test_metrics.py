"""Prometheus metrics: the observer's counts, the fleet gauges from Redis, a real worker scraped."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from config import load_settings
from forwarder import Publisher
from forwarder.protocol import RedisKeys
from harness.stack import Worker, free_port, wait_until
from harness.standin import StandinServer
from workers.delivery.records import Attempt, Claim, Settlement, Verdict
from workers.ops.metrics import FleetCollector, PrometheusObserver

ID = "incident-metrics-0001"


def _claim(claimed_at_ms: int = 10_000, published_ms: int | None = 7_500) -> Claim:
    return Claim(ID, 1, 0, 0, 0, None, {}, claimed_at_ms=claimed_at_ms, published_ms=published_ms)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_observer_counts_outcomes_by_status_and_times_them() -> None:
    """Delivered, failed-to-connect and never-sent settlements each count under their label."""
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    observer.settled(
        _claim(), Settlement(ID, 1, Verdict.DELIVERED), Attempt(202, {}, "", None, 0.5)
    )
    observer.settled(
        _claim(), Settlement(ID, 1, Verdict.RETRY), Attempt(None, {}, "", "reset", 0.25)
    )
    observer.settled(_claim(), Settlement(ID, 1, Verdict.DEAD, reason="orphan"), None)
    observer.folded(entries=10, poison=2)
    total = "dora_forwarder_deliveries_total"
    assert _value(registry, total, outcome="delivered", status_code="202") == 1
    assert _value(registry, total, outcome="retry", status_code="error") == 1
    assert _value(registry, total, outcome="dead", status_code="none") == 1
    assert _value(registry, "dora_forwarder_http_request_duration_seconds_count") == 2
    assert _value(registry, "dora_forwarder_http_request_duration_seconds_sum") == 0.75
    # Published at 7.5 s, claimed at 10 s, answered 0.5 s later: 3 s from publish to 2xx.
    assert _value(registry, "dora_forwarder_publish_to_delivery_seconds_sum") == 3.0
    assert _value(registry, "dora_forwarder_publish_to_delivery_seconds_count") == 1
    assert _value(registry, "dora_forwarder_ingested_entries_total") == 8
    assert _value(registry, "dora_forwarder_poison_entries_total") == 2


def test_fleet_gauges_read_redis_at_scrape(
    redis_url: str, prefix: str, keys: RedisKeys, sync_redis: redis.Redis
) -> None:
    """Backlog, dead letters, gate and live workers come from Redis, whoever scrapes."""
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        publisher.incident_started(team="ops", id="incident-gauge-0001")
        publisher.incident_started(team="ops", id="incident-gauge-0002")
    sync_redis.xadd(keys.dead, {"reason": "test"})
    now_s, _ = sync_redis.time()
    sync_redis.hset(keys.gate, mapping={"closed_until_ms": (now_s + 60) * 1000, "reason": "auth"})
    sync_redis.zadd(keys.workers, {"host-a:1": now_s * 1000, "host-a:2": now_s * 1000})
    registry = CollectorRegistry()
    registry.register(FleetCollector(load_settings(redis_url=redis_url, key_prefix=prefix)))
    assert _value(registry, "dora_forwarder_redis_up") == 1
    assert _value(registry, "dora_forwarder_backlog_entries") == 2
    assert _value(registry, "dora_forwarder_dead_letters") == 1
    assert _value(registry, "dora_forwarder_live_workers") == 2
    assert _value(registry, "dora_forwarder_gate_open") == 0
    assert 55 < (_value(registry, "dora_forwarder_gate_closed_seconds", reason="auth") or 0) <= 60
    assert _value(registry, "dora_forwarder_gate_closed_seconds", reason="rate_limit") == 0


def test_unreachable_redis_is_a_gauge_not_a_failed_scrape() -> None:
    """With Redis down a scrape still answers, with dora_forwarder_redis_up 0."""
    registry = CollectorRegistry()
    url = f"redis://127.0.0.1:{free_port()}/0"
    registry.register(FleetCollector(load_settings(redis_url=url)))
    assert _value(registry, "dora_forwarder_redis_up") == 0
    assert _value(registry, "dora_forwarder_backlog_entries") is None


@pytest.mark.integration
def test_worker_serves_counts_of_all_its_pool_processes(
    start_worker: Callable[..., Worker],
    standin: StandinServer,
    redis_url: str,
    prefix: str,
    api_key: str,
) -> None:
    """A real 2-process worker: /metrics sums both processes' deliveries, by status code."""
    port = free_port()
    start_worker(
        "worker", "--beat", "--concurrency=2", FORWARDER_METRICS_PORT=str(port),
        FORWARDER_METRICS_HOST="127.0.0.1",
    )  # fmt: skip
    ids = [f"incident-metrics-{i:06d}" for i in range(60)]
    standin.respond_next(400)  # one of them is rejected: a dead letter
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        publisher.publish_many([{"id": i, "started_at": 1_700_000_000, "team": "t"} for i in ids])

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())

    def settled() -> dict[Any, float] | None:
        try:
            samples = _samples(scrape())
        except OSError:  # the worker is still starting
            return None
        counted = sum(v for (n, _), v in samples.items() if n == "dora_forwarder_deliveries_total")
        return samples if counted == len(ids) else None

    samples = wait_until(settled, timeout_s=30, what="60 settled deliveries in /metrics")
    total = "dora_forwarder_deliveries_total"
    assert samples[(total, (("outcome", "delivered"), ("status_code", "202")))] == 59
    assert samples[(total, (("outcome", "dead"), ("status_code", "400")))] == 1
    assert samples[("dora_forwarder_publish_to_delivery_seconds_count", ())] == 59
    assert samples[("dora_forwarder_http_request_duration_seconds_count", ())] == 60
    assert samples[("dora_forwarder_ingested_entries_total", ())] == 60
    assert samples[("dora_forwarder_dead_letters", ())] == 1
    assert samples[("dora_forwarder_backlog_entries", ())] == 0
    assert samples[("dora_forwarder_gate_open", ())] == 1
    assert samples[("dora_forwarder_live_workers", ())] >= 1
    assert api_key not in scrape()
