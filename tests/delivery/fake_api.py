"""A scripted stand-in of Datadog's API in-process (httpx.MockTransport), and a pump wired to it."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import redis.asyncio as aioredis
from pydantic import SecretStr

from forwarder.protocol import RedisKeys
from tests.delivery.events import ID
from workers.delivery.backoff import BackoffPolicy
from workers.delivery.pump import Pump, PumpConfig
from workers.delivery.sender import DatadogSender
from workers.delivery.settlement import SettlementPolicy
from workers.delivery.store import Store

API_KEY = "pump-test-key-0123456789abcdef"

# What httpx.MockTransport calls for each request, synchronously or not.
Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


class FakeDatadog:
    """Answers from a script of statuses (then 202), and records every request."""

    def __init__(self, *statuses: int, error: Exception | None = None) -> None:
        self.headers: dict[str, str] = {}
        self.statuses = list(statuses)
        self.error = error
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        status = self.statuses.pop(0) if self.statuses else 202
        if status == 202:
            return httpx.Response(202, json={"data": {"id": ID, "type": "dora_failure"}})
        return httpx.Response(status, json={"errors": [f"status {status}"]}, headers=self.headers)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content)["data"]["attributes"] for r in self.requests]


def make_pump(client: aioredis.Redis, keys: RedisKeys, api: Handler, **config: Any) -> Pump:
    """A pump on ``client`` whose sender talks to ``api``; ``config`` overrides its settings."""
    sender = DatadogSender(
        base_url="https://api.example.test",
        api_key=SecretStr(API_KEY),
        timeout_s=5.0,
        transport=httpx.MockTransport(api),
    )
    policy = SettlementPolicy(
        backoff=BackoffPolicy(base_s=0.01, max_s=0.02),
        orphan_wait_ms=config.pop("orphan_wait_ms", 60_000),
        max_age_ms=config.pop("max_age_ms", 3_600_000),
        auth_pause_s=config.pop("auth_pause_s", 60.0),
    )
    defaults: dict[str, Any] = {
        "consumer": "test-consumer",
        "ingest_batch": 100,
        "max_in_flight": 8,
        "lease_ms": 30_000,
        "reclaim_idle_ms": 30_000,
        "retention_ms": 3_600_000,
        "policy": policy,
    }
    return Pump(Store(client, keys), sender, PumpConfig(**{**defaults, **config}))
