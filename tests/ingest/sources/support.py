"""What the tests of ``POST /sources/<source>`` share: secrets, the app in-process, signing.

The app runs in-process (httpx's ASGITransport, its lifespan entered as a server would)
against the real Redis of the suite, on the test's own key prefix. Each secret is random
per run, so that any leak of one into a log record or an answer can be searched for.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import redis
from pydantic import SecretStr

from config import Settings, load_settings
from forwarder import Event
from forwarder.entry import decode_entry
from forwarder.protocol import RedisKeys
from harness import streams
from workers.ingest.app import create_app
from workers.ingest.keys import IngestKeys

DATA: Final = Path(__file__).resolve().parents[2] / "data" / "sources"

INGEST_KEY: Final = f"ingest-key-{uuid.uuid4().hex}"
DATADOG_KEY: Final = f"datadog-key-{uuid.uuid4().hex}"
PAGERDUTY_SECRET: Final = f"pagerduty-secret-{uuid.uuid4().hex}"
GITHUB_SECRET: Final = f"github-secret-{uuid.uuid4().hex}"
GITLAB_TOKEN: Final = f"gitlab-token-{uuid.uuid4().hex}"
SECRETS: Final = (INGEST_KEY, DATADOG_KEY, PAGERDUTY_SECRET, GITHUB_SECRET, GITLAB_TOKEN)
"""Nothing the forwarder writes (log, answer, repr) may hold any of these."""

SOURCES: Final = ("alertmanager", "pagerduty", "github", "gitlab")
GITLAB_HOOK: Final = "Deployment Hook"


def source_settings(redis_url: str, prefix: str, **overrides: Any) -> Settings:
    """Every source on, the Datadog key set (as on a real host); ``overrides`` win."""
    return load_settings(
        **{
            "redis_url": redis_url,
            "key_prefix": prefix,
            "ingest_keys": SecretStr(INGEST_KEY),
            "dd_api_key": SecretStr(DATADOG_KEY),
            "alertmanager_source": True,
            "pagerduty_webhook_secret": SecretStr(PAGERDUTY_SECRET),
            "github_webhook_secret": SecretStr(GITHUB_SECRET),
            "gitlab_webhook_token": SecretStr(GITLAB_TOKEN),
            "publish_timeout_s": 0.5,
            **overrides,
        }
    )


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app of ``settings`` with its lifespan entered, and a client of it."""
    keys = IngestKeys.from_settings(settings.ingest_keys, settings.dd_api_key)
    app = create_app(settings, keys)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as c:
            yield c


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def proof(source: str, body: bytes) -> dict[str, str]:
    """The headers with which ``source`` itself sends ``body``: its proof, JSON, its event."""
    if source == "alertmanager":
        return {"Authorization": f"Bearer {INGEST_KEY}"}
    if source == "pagerduty":
        return {"X-PagerDuty-Signature": f"v1={hmac_hex(PAGERDUTY_SECRET, body)}"}
    if source == "github":
        return {
            "X-Hub-Signature-256": f"sha256={hmac_hex(GITHUB_SECRET, body)}",
            "X-GitHub-Event": "deployment_status",
            "X-GitHub-Delivery": str(uuid.uuid4()),
        }
    return {"X-Gitlab-Token": GITLAB_TOKEN, "X-Gitlab-Event": GITLAB_HOOK}


def payload(name: str) -> Any:
    """A published example of tests/data/sources, parsed (to edit it before sending)."""
    return json.loads((DATA / f"{name}.json").read_bytes())


def raw(name: str) -> bytes:
    """A published example, byte for byte as its system sent it."""
    return (DATA / f"{name}.json").read_bytes()


async def deliver(
    client: httpx.AsyncClient,
    source: str,
    body: bytes | Any,
    headers: Mapping[str, str] | None = None,
    *,
    signed: bool = True,
) -> httpx.Response:
    """POST ``body`` (bytes as they are, else as JSON) to ``source``, with its own proof
    when ``signed``; ``headers`` added, or replacing those.

    Every answer is searched for the secrets, whatever the test goes on to check.
    """
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(proof(source, content) if signed else {})}
    sent.update(headers or {})
    response = await client.post(f"/sources/{source}", content=content, headers=sent)
    assert not leaked(response.text), response.text
    return response


def enqueued(sync_redis: redis.Redis, prefix: str) -> list[Event]:
    """The events of the ingest stream of ``prefix``, oldest first, as a worker decodes them."""
    entries = streams.entries(sync_redis, RedisKeys(prefix).ingest)
    return [decode_entry(fields) for _, fields in entries]


def leaked(text: str) -> list[str]:
    """The secrets ``text`` holds (none, one hopes)."""
    return [secret for secret in SECRETS if secret in text]


def secrets_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages of the records (setup and call) whose formatted text holds a secret."""
    records = caplog.get_records("setup") + caplog.get_records("call")
    formatter = logging.Formatter()
    return [record.getMessage() for record in records if leaked(formatter.format(record))]
