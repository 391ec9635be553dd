"""Load on the ingest endpoint: how many Datadog-style POSTs per second ``serve`` stores.

``--source alertmanager`` posts Alertmanager notifications to ``/sources/alertmanager``
instead, ``--alerts`` firing alerts in each (every alert one stream entry).

Starts ``dora-forwarder serve`` on loopback against a Redis (DB 15 by default, a key prefix
of its own, deleted afterwards), then sends a fixed number of failure bodies from
``--connections`` concurrent keep-alive clients and reports the rate and the latency of a
request (from sending to the 202, which comes after Redis acknowledged the XADD). Every
request is counted: the run fails if any answer is not 202 or the stream does not hold
exactly one entry per request. Bounded in count (``--requests``) and in time (a deadline).

    python -m bench.ingest_load                       # 20,000 requests, 32 connections
    python -m bench.ingest_load --connections 1 --requests 2000
    python -m bench.ingest_load --source alertmanager --alerts 10 --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import redis

from forwarder.protocol import RedisKeys
from harness.serve import ServeProcess, serve_env
from harness.stack import delete_keys

KEY = "bench-ingest-key-0123456789abcdef"
DEADLINE_S = 300.0


def body(number: int) -> bytes:
    return (
        b'{"data":{"attributes":{"id":"bench-ingest-%012d","started_at":1795420000,'
        b'"services":["checkout"],"env":"prod","severity":"SEV-2"}}}' % number
    )


def notification(number: int, alerts: int) -> bytes:
    """An Alertmanager webhook (version 4) of ``alerts`` firing alerts, each its own incident."""
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "dora",
            "groupKey": f'{{}}:{{alertname="Bench{number}"}}',
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": f"Bench{number}", "service": "checkout", "env": "prod"},
                    "annotations": {"summary": "p99 latency above 2 s"},
                    "startsAt": "2026-12-04T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": f"{number:010x}{alert:06x}",
                }
                for alert in range(alerts)
            ],
        }
    ).encode()


@dataclass(frozen=True)
class Target:
    """Where the load goes, its headers, and the body of request number N."""

    path: str
    headers: dict[str, str]
    body: Callable[[int], bytes]
    entries_per_request: int


def target(source: str, alerts: int) -> Target:
    if source == "alertmanager":
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        return Target("/sources/alertmanager", headers, lambda n: notification(n, alerts), alerts)
    headers = {"DD-API-KEY": KEY, "Content-Type": "application/json"}
    return Target("/api/v2/dora/failure", headers, body, 1)


async def load(url: str, requests: int, connections: int, goal: Target) -> list[float]:
    """Send ``requests`` POSTs over ``connections`` clients; each request's seconds.

    aiohttp, not httpx, on the client side: httpx's own async transport is slower than the
    server measured here (see the README's dependency notes), and would be the bottleneck.
    """
    latencies: list[float] = []
    numbers = iter(range(requests))
    deadline = time.monotonic() + DEADLINE_S
    headers = goal.headers
    where = f"{url}{goal.path}"
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)

    async def client(session: aiohttp.ClientSession) -> None:
        for number in numbers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not done within {DEADLINE_S:g} s")
            started = time.perf_counter()
            async with session.post(where, data=goal.body(number), headers=headers) as answer:
                text = await answer.text()
            latencies.append(time.perf_counter() - started)
            if answer.status != 202:
                raise AssertionError(f"request {number}: {answer.status} {text}")

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(connections)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--source", choices=("datadog", "alertmanager"), default="datadog")
    parser.add_argument("--alerts", type=int, default=10, help="alerts per notification")
    args = parser.parse_args()
    goal = target(args.source, args.alerts)
    prefix = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        env = serve_env(
            args.redis_url, prefix, FORWARDER_INGEST_KEYS=KEY, FORWARDER_ALERTMANAGER_SOURCE="true"
        )
        server = ServeProcess(env, Path(tmp) / "serve.log").wait_listening()
        try:
            started = time.perf_counter()
            latencies = asyncio.run(load(server.url, args.requests, args.connections, goal))
            elapsed = time.perf_counter() - started
            client = redis.Redis.from_url(args.redis_url)
            stored = client.xlen(RedisKeys(prefix).ingest)
            client.close()
        finally:
            server.stop()
            delete_keys(args.redis_url, "{" + prefix + "}*")
    expected = args.requests * goal.entries_per_request
    if stored != expected:
        raise SystemExit(f"the stream holds {stored} entries, not {expected}")
    median_ms = statistics.median(latencies) * 1000
    p99_ms = statistics.quantiles(latencies, n=100)[98] * 1000
    print(
        f"{args.requests} requests to {goal.path}, {args.connections} connection(s): "
        f"{args.requests / elapsed:,.0f} requests/s, {stored / elapsed:,.0f} entries stored/s; "
        f"latency median {median_ms:.2f} ms, "
        f"p99 {p99_ms:.2f} ms; stream entries {stored}"
    )


if __name__ == "__main__":
    main()
