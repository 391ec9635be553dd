"""Review of issue 14: a password written with an unencoded '/', '?' or '#' is never shown."""

from __future__ import annotations

import pytest

from config import SettingsError, load_settings
from config.redis_url import mask_url_password
from forwarder.sentinel_url import parse_sentinel_url

# urlsplit ends the host part at the first '/', '?' or '#': the rest of such a password
# (and the '@' after it) lands in the path, query or fragment.
LEAKY = [
    "redis://:s3cr#etpw@10.0.0.1:6379/0",
    "redis://:s3cr?etpw@10.0.0.1:6379/0",
    "redis://user:s3cr/etpw@10.0.0.1:6379/0",
    "rediss://:s3cr#etpw@10.0.0.1:6379/0?password=s3cretpw",
    "sentinel://h0:26379;sentinel://:s3cr#etpw@h1:26379;sentinel://h2",
    "sentinel://:s3cr/etpw@h1:26379/2",
]


@pytest.mark.parametrize("url", LEAKY)
def test_mask_shows_no_part_of_a_password_with_an_unencoded_delimiter(url: str) -> None:
    masked = mask_url_password(url)
    assert "s3cr" not in masked
    assert "etpw" not in masked
    assert "***" in masked


@pytest.mark.parametrize("url", LEAKY[:4])
def test_settings_refuse_such_a_url_without_showing_the_password(url: str) -> None:
    """redis-py would say "Port could not be cast to integer value as 's3cr'": half of it."""
    with pytest.raises(SettingsError) as caught:
        load_settings(redis_url=url)
    assert "s3cr" not in str(caught.value)
    assert "etpw" not in str(caught.value)
    assert "percent-encode" in str(caught.value)


def test_a_plain_url_keeps_its_user_and_host_when_masked() -> None:
    masked = mask_url_password("redis://user:pw@10.0.0.1:6379/0?password=x&db=1")
    assert masked == "redis://user:***@10.0.0.1:6379/0?password=***&db=1"


@pytest.mark.parametrize(
    "url",
    ["unix:///run/redis@1.sock?db=2", "unix://:pw@/run/redis@1.sock", "redis://u:p@h:6379/0"],
)
def test_an_at_where_it_belongs_is_accepted(url: str) -> None:
    assert load_settings(redis_url=url).redis_url == url


def test_a_sentinel_part_with_a_slash_in_its_password_is_refused_unshown() -> None:
    """ "u:1234/x@h1" parsed as host u, port 1234, database "x@h1": the error showed that."""
    with pytest.raises(ValueError, match="percent-encode") as caught:
        parse_sentinel_url("sentinel://h0;sentinel://u:1234/x@h1")
    assert "1234" not in str(caught.value)
    assert "x@h1" not in str(caught.value)
