"""Redis clients from a URL: the one place every part of the forwarder builds them.

``redis://``, ``rediss://`` and ``unix://`` URLs go to redis-py's ``from_url``. Celery's
Sentinel form, ``sentinel://[user:password@]host:26379[/db];sentinel://host2:26379;...``,
names the sentinels that watch a primary; with the primary's name (the master name that
Sentinel monitors, ``FORWARDER_REDIS_SENTINEL_MASTER``) the client asks a sentinel where the
primary is before each new connection, so it follows the primary through a failover.
The URL's form is ``forwarder.sentinel_url``'s to read.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from forwarder.sentinel_url import (
    SENTINEL_MASTER_VARIABLE,
    is_sentinel_url,
    parse_sentinel_url,
)

__all__ = ["async_redis_client", "redis_client"]


def _master_name(sentinel_master: str | None) -> str:
    if not sentinel_master:
        raise ValueError(
            f"a sentinel:// Redis URL needs {SENTINEL_MASTER_VARIABLE}: the name under which "
            "the sentinels monitor the primary (their `sentinel monitor <name> ...`)"
        )
    return sentinel_master


class _SentinelRedis(redis.Redis):
    """The primary's client; closing it closes the connections to the sentinels too."""

    def close(self) -> None:
        super().close()
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            manager.close()


class _AsyncSentinelRedis(redis.asyncio.Redis):
    """The asyncio twin of ``_SentinelRedis``."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            await manager.aclose()


def _sentinel_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """How to talk to the sentinels: the same socket timeouts, no password."""
    return {key: value for key, value in kwargs.items() if key.startswith("socket_")}


def _sentinel_parts(
    url: str, sentinel_master: str | None, options: dict[str, Any]
) -> tuple[list[tuple[str, int]], dict[str, Any], str, dict[str, Any]]:
    """For a Sentinel URL: the sentinels and how to ask them, the master's name, and the
    primary's connection options (its credentials and database with ``options``)."""
    name = _master_name(sentinel_master)
    address = parse_sentinel_url(url)
    primary = dict(options, username=address.username, password=address.password, db=address.db)
    return list(address.sentinels), _sentinel_kwargs(options), name, primary


def redis_client(
    url: str,
    *,
    sentinel_master: str | None = None,
    socket_timeout: float | None = None,
    socket_connect_timeout: float | None = None,
    **kwargs: Any,
) -> redis.Redis:
    """A client of the Redis ``url`` names (the current primary, for a Sentinel URL).

    ``kwargs`` go to redis-py's connections (``health_check_interval``, ``retry`` ...).
    A Sentinel URL without ``sentinel_master`` is a ``ValueError`` naming the variable.
    """
    options = dict(
        kwargs, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout
    )
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    sentinels, asking, name, primary = _sentinel_parts(url, sentinel_master, options)
    manager = redis.sentinel.Sentinel(sentinels, sentinel_kwargs=asking)
    client: redis.Redis = manager.master_for(name, redis_class=_SentinelRedis, **primary)
    return client


def async_redis_client(
    url: str,
    *,
    sentinel_master: str | None = None,
    socket_timeout: float | None = None,
    socket_connect_timeout: float | None = None,
    **kwargs: Any,
) -> redis.asyncio.Redis:
    """The asyncio twin of ``redis_client``."""
    options = dict(
        kwargs, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout
    )
    if not is_sentinel_url(url):
        return redis.asyncio.Redis.from_url(url, **options)
    sentinels, asking, name, primary = _sentinel_parts(url, sentinel_master, options)
    manager = redis.asyncio.sentinel.Sentinel(sentinels, sentinel_kwargs=asking)
    client: redis.asyncio.Redis = manager.master_for(
        name, redis_class=_AsyncSentinelRedis, **primary
    )
    return client
