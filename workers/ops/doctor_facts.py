"""What ``dora-forwarder doctor`` asks: Datadog's key validation endpoint, and Redis.

Thin I/O: every answer becomes a field of ``Facts`` and ``workers.ops.doctor`` judges them.
Each question is bounded: the API by ``VALIDATE_TIMEOUT_S``, Redis by the client it is given
(the CLI's gives up after ``FORWARDER_PUBLISH_TIMEOUT_S``). The HTTP transport, the Redis
client and this host's clock are parameters, so that tests can replace them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import httpx
import redis

from config import Settings
from config.redis_url import mask_url_password
from forwarder.protocol import RedisKeys
from workers.ops.doctor_records import ClockReading, Facts, KeyAnswer, RedisFacts
from workers.ops.logs import redact
from workers.ops.status import live_window_ms, read_status

VALIDATE_PATH: Final = "/api/v1/validate"
"""Datadog's check of an API key: 200 ``{"valid": true}``, 403 when it is not valid."""
VALIDATE_TIMEOUT_S: Final = 5.0
"""How long doctor waits for that answer (connect, and each read): long enough for a far
site through a proxy, short enough that a black-holed route does not look like a hang."""


def ask_api_key(
    settings: Settings, transport: httpx.BaseTransport | None = None
) -> KeyAnswer | None:
    """Ask ``<api base URL>/api/v1/validate`` about DD_API_KEY; None when it is not set."""
    if settings.dd_api_key is None:
        return None
    key = settings.dd_api_key.get_secret_value()
    try:
        # No proxy from the environment, as the workers' sender (aiohttp) takes none, but the
        # CAs they trust (httpx's context: SSL_CERT_FILE, SSL_CERT_DIR): doctor must reach
        # the API the way they do, or its verdict is about another route.
        with httpx.Client(
            timeout=VALIDATE_TIMEOUT_S,
            transport=transport,
            trust_env=False,
            verify=httpx.create_ssl_context(),
        ) as client:
            response = client.get(
                settings.api_base_url + VALIDATE_PATH,
                headers={"DD-API-KEY": key, "Accept": "application/json"},
            )
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        # InvalidURL and ValueError (UnicodeError among them): a FORWARDER_API_URL or DD_SITE
        # the settings let through but no URL can be made of (a port that is no number, an
        # empty label), a verdict of its own rather than a traceback.
        # httpx names the URL, never the headers; scrubbed anyway, as the key must never show.
        reason = str(exc) or "no answer"
        return KeyAnswer(status=None, error=redact(f"{type(exc).__name__}: {reason}", [key]))
    valid = None
    try:
        body: Any = response.json()
    except ValueError:  # an HTML error page from a proxy: the status says enough
        body = None
    if isinstance(body, dict) and isinstance(body.get("valid"), bool):
        valid = body["valid"]
    return KeyAnswer(status=response.status_code, valid=valid)


def _config(client: redis.Redis, name: str) -> str:
    """``CONFIG GET name``, or ``unknown`` where CONFIG is not allowed (managed Redis)."""
    try:
        return str(client.config_get(name).get(name, ""))
    except redis.ResponseError:
        return "unknown"


def _clock(client: redis.Redis, host_ms: Callable[[], float]) -> ClockReading:
    before = host_ms()
    seconds, micros = client.time()
    after = host_ms()
    return ClockReading(before, int(seconds) * 1000 + int(micros) / 1000, after)


def read_redis(client: redis.Redis, settings: Settings, host_ms: Callable[[], float]) -> RedisFacts:
    """Everything the Redis checks judge; raises ``redis.RedisError`` if Redis fails."""
    keys = RedisKeys(settings.key_prefix)
    client.ping()  # connect first, so that the clock's round trip is one command's
    clock = _clock(client, host_ms)
    info = client.info("all")
    status = read_status(client, keys, live_window_ms(settings), settings.publish_replicas)
    oldest = client.xrange(keys.ingest, count=1)
    due = client.zrange(keys.due, 0, 0, withscores=True)
    return RedisFacts(
        info=info,
        save=_config(client, "save"),
        appendfsync=_config(client, "appendfsync"),
        status=status,
        clock=clock,
        oldest_entry_ms=_id_ms(oldest[0][0]) if oldest else None,
        earliest_due_ms=int(due[0][1]) if due else None,
    )


def _id_ms(entry_id: Any) -> int:
    """The time part of a stream entry id (``<ms>-<seq>``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.split("-")[0])


def _host_ms() -> float:
    return time.time() * 1000


def gather(
    settings: Settings,
    client: redis.Redis,
    secrets: Iterable[str],
    transport: httpx.BaseTransport | None = None,
    host_ms: Callable[[], float] | None = None,
) -> Facts:
    """Ask the API and Redis; an error of either becomes a fact (secrets redacted).

    ``secrets`` longest first, as ``secrets_of`` gives them; ``host_ms`` is this host's clock
    (tests replace it).
    """
    redis_facts, redis_error = None, None
    try:
        redis_facts = read_redis(client, settings, host_ms or _host_ms)
    except redis.RedisError as exc:
        redis_error = redact(f"{type(exc).__name__}: {exc}", secrets)
    return Facts(
        site=settings.dd_site,
        api_url=mask_url_password(settings.api_base_url),
        api_key=ask_api_key(settings, transport),
        app_key_set=settings.dd_app_key is not None,
        redis_url=settings.redis_url_for_logs,
        redis=redis_facts,
        redis_error=redis_error,
    )
