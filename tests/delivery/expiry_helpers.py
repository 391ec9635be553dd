"""Waiting helpers for the expiry tests: on a condition read from Redis, or on Redis' clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from workers.delivery.store import Store


async def wait_for(
    probe: Callable[[], Awaitable[Any]],
    truthy: bool = True,
    *,
    timeout_s: float = 10.0,
    what: str = "condition",
) -> None:
    """Poll ``probe`` until its answer's truth is ``truthy``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while bool(await probe()) is not truthy:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def past(store: Store, ms: int) -> None:
    """Return once Redis' clock (the clock expiry runs on) has moved ``ms`` on from now."""
    until = await store.redis_time_ms() + ms
    await wait_for(
        lambda: _reached(store, until), timeout_s=10 + ms / 1000, what=f"{ms} ms of Redis' clock"
    )


async def _reached(store: Store, until_ms: int) -> bool:
    return await store.redis_time_ms() >= until_ms
