"""Celery's Sentinel URL: parsed, masked part by part, required with its master name, and
given to kombu and redis-py the way each reads it. No server needed."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import redis.asyncio.sentinel
import redis.sentinel
from kombu import Connection

from config import Settings
from config.redis_url import broker_url, mask_url_password, password_forms, redis_password
from config.settings import SettingsError, load_settings
from forwarder import Publisher
from forwarder.connection import async_redis_client, redis_client
from forwarder.sentinel_url import parse_sentinel_url
from workers.celery_app import broker_transport_options
from workers.ops.logs import secrets_of

SECRET = "s3cr;et@/ +x"  # noqa: S105 - a test's password
WRITTEN = quote(SECRET, safe="")
URL = f"sentinel://:{WRITTEN}@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://[::1]"


def test_parts_give_sentinels_credentials_and_database() -> None:
    """Each part a sentinel (26379 by default); password and database from where written."""
    address = parse_sentinel_url(URL)
    assert address.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26379))
    assert (address.password, address.db, address.username) == (SECRET, 2, None)
    later = parse_sentinel_url("sentinel://h1;sentinel://user:pw@h2/3")
    assert (later.username, later.password, later.db) == ("user", "pw", 3)
    assert parse_sentinel_url("sentinel://h?password=q").password == "q"  # noqa: S105
    assert SECRET not in repr(address)
    assert WRITTEN not in repr(address)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sentinel://:a@h1;sentinel://:b@h2", "another password"),
        ("sentinel://h1/1;sentinel://h2/2", "another database"),
        ("sentinel://h1;redis://h2", "separated by ';sentinel://'"),
        ("sentinel://h1;SENTINEL://h2;", "separated by ';sentinel://'"),  # kombu: + localhost
        ("redis://h1", "must start with sentinel://"),
        ("sentinel://h1:port", "not a number"),
        ("sentinel://:pw@", "names no host"),
        ("sentinel://:pa;ss@h1", "%3B"),
        ("sentinel://h1/zero", "must be a number"),
    ],
)
def test_a_malformed_url_is_refused_without_showing_a_password(url: str, says: str) -> None:
    """The error names the part and the fault, never the password."""
    with pytest.raises(ValueError, match=says) as caught:
        parse_sentinel_url(url)
    for secret in ("pa;ss", "ss@h1", ":a@", ":b@"):
        assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (URL, "sentinel://:***@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://[::1]"),
        (
            "sentinel://u:a@h1;sentinel://:b@h2?password=c",
            "sentinel://u:***@h1;sentinel://:***@h2?password=***",
        ),
        # A stray ; stays in its part (only `;sentinel://` starts one): all of it is masked.
        ("sentinel://:pa;ss@h1;sentinel://h2", "sentinel://:***@h1;sentinel://h2"),
    ],
)
def test_every_part_s_password_is_masked(url: str, masked: str) -> None:
    """Each part of the list loses its password, wherever it is written."""
    assert mask_url_password(url) == masked


def test_log_secrets_hold_each_part_s_password_in_every_form() -> None:
    """The log filter knows every part's password, written, decoded and re-encoded."""
    url = f"{URL};sentinel://:other@h4"
    forms = password_forms(url)
    assert {SECRET, WRITTEN, "other"} <= forms
    assert redis_password(url) == SECRET
    settings = Settings(redis_url=URL, redis_sentinel_master="mymaster")
    assert SECRET in secrets_of(settings)
    assert SECRET not in repr(settings)
    assert WRITTEN not in settings.redis_url_for_logs


def test_a_sentinel_url_needs_its_master_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without FORWARDER_REDIS_SENTINEL_MASTER the error names both variables, masked."""
    monkeypatch.setenv("FORWARDER_REDIS_URL", URL)
    monkeypatch.setenv("FORWARDER_REDIS_SENTINEL_MASTER", "")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "FORWARDER_REDIS_URL" in message
    assert "FORWARDER_REDIS_SENTINEL_MASTER" in message
    assert SECRET not in message
    assert WRITTEN not in message
    monkeypatch.setenv("FORWARDER_REDIS_SENTINEL_MASTER", " mymaster ")
    assert load_settings().redis_sentinel_master == "mymaster"


def test_a_bad_sentinel_url_is_a_settings_error_without_the_password() -> None:
    """The URL's own fault is reported under FORWARDER_REDIS_URL, masked."""
    with pytest.raises(SettingsError, match=r"FORWARDER_REDIS_URL: .*another password") as caught:
        load_settings(redis_url="sentinel://:a1@h1;sentinel://:b2@h2", redis_sentinel_master="m")
    assert "a1" not in str(caught.value)
    assert "b2" not in str(caught.value)


def test_kombu_reads_the_primary_s_password_and_database_from_the_broker_url() -> None:
    """kombu reads credentials and database only from the first part: they are moved there."""
    url = f"sentinel://10.0.0.2:26380;sentinel://:{WRITTEN}@10.0.0.1/2"
    connection = Connection(broker_url(url))
    assert connection.transport_cls == "sentinel"
    assert connection.password == SECRET
    assert connection.virtual_host == "2"
    assert connection.alt[0].endswith("@10.0.0.2:26380/2")
    assert connection.alt[1:] == ["sentinel://10.0.0.1:26379"]
    settings = Settings(redis_url=url, redis_sentinel_master="mymaster")
    assert broker_transport_options(settings)["master_name"] == "mymaster"
    plain = Settings(redis_url="redis://h:6379/0", redis_sentinel_master="ignored")
    assert "master_name" not in broker_transport_options(plain)


def test_clients_ask_the_sentinels_for_the_primary_and_log_in_to_it() -> None:
    """redis-py's Sentinel pool: sentinels without password, the primary with it."""
    client = redis_client(URL, sentinel_master="mymaster", socket_timeout=0.5)
    try:
        pool = client.connection_pool
        assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
        assert pool.service_name == "mymaster"
        assert pool.connection_kwargs["password"] == SECRET
        assert pool.connection_kwargs["db"] == 2
        assert pool.connection_kwargs["socket_timeout"] == 0.5
        for sentinel in pool.sentinel_manager.sentinels:
            assert sentinel.connection_pool.connection_kwargs.get("password") is None
    finally:
        client.close()


@pytest.mark.anyio
async def test_async_clients_ask_the_sentinels_too() -> None:
    """The asyncio client is a Sentinel-managed one as well; closing it closes all."""
    client = async_redis_client(URL, sentinel_master="mymaster")
    try:
        assert isinstance(client.connection_pool, redis.asyncio.sentinel.SentinelConnectionPool)
        assert client.connection_pool.connection_kwargs["password"] == SECRET
    finally:
        await client.aclose()


def test_a_sentinel_url_without_master_name_is_refused_by_the_factory() -> None:
    """The Publisher and the factories say which variable is missing."""
    for build in (
        lambda: redis_client(URL),
        lambda: async_redis_client(URL),
        lambda: Publisher.from_url(URL),
    ):
        with pytest.raises(ValueError, match="FORWARDER_REDIS_SENTINEL_MASTER"):
            build()
