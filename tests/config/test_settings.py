"""Settings from the environment: defaults, overrides, errors naming the variable."""

from __future__ import annotations

import pytest

from config import SettingsError, load_settings
from config.redis_url import mask_url_password

KEY = "abcdef0123456789abcdef0123456789"


pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults() -> None:
    """With nothing set, the forwarder targets US1 and a local Redis."""
    settings = load_settings()
    assert settings.api_base_url == "https://api.datadoghq.com"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.dd_api_key is None


def test_site_and_url_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """DD_SITE picks the API host; FORWARDER_API_URL overrides it (proxies, tests)."""
    monkeypatch.setenv("DD_SITE", "datadoghq.eu")
    assert load_settings().api_base_url == "https://api.datadoghq.eu"
    monkeypatch.setenv("FORWARDER_API_URL", "http://127.0.0.1:8080/")
    assert load_settings().api_base_url == "http://127.0.0.1:8080"


def test_tunables_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tunable is read under the FORWARDER_ prefix."""
    monkeypatch.setenv("FORWARDER_MAX_IN_FLIGHT", "7")
    monkeypatch.setenv("FORWARDER_LEASE_S", "12.5")
    settings = load_settings()
    assert (settings.max_in_flight, settings.lease_s) == (7, 12.5)


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("FORWARDER_MAX_IN_FLIGHT", "0", "greater than or equal to 1"),
        ("FORWARDER_INGEST_BATCH", "many", "valid integer"),
        ("FORWARDER_LEASE_S", "-1", "greater than 0"),
        ("FORWARDER_REDIS_URL", "http://x", "redis://"),
        ("FORWARDER_API_URL", "ftp://x", "http:// or https://"),
        ("DD_SITE", "api.datadoghq.com", "bare site"),
        ("FORWARDER_KEY_PREFIX", "has space", "1-64 characters"),
        ("FORWARDER_LOG_LEVEL", "LOUD", "DEBUG"),
        ("FORWARDER_PATCH_BY_VERSION", "maybe", "valid boolean"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    """A bad value fails at start with the environment variable's name and the reason."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=rf"{variable}: .*{reason}"):
        load_settings()


def test_lease_must_outlast_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease shorter than a request could let two workers send one incident at once."""
    monkeypatch.setenv("FORWARDER_LEASE_S", "5")
    monkeypatch.setenv("FORWARDER_HTTP_TIMEOUT_S", "10")
    with pytest.raises(SettingsError, match="FORWARDER_LEASE_S"):
        load_settings()


def test_breaker_probe_spacing_must_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe cap below the first probe's wait fails at start, naming both variables."""
    monkeypatch.setenv("FORWARDER_BREAKER_PROBE_S", "10")
    monkeypatch.setenv("FORWARDER_BREAKER_PROBE_MAX_S", "5")
    with pytest.raises(
        SettingsError, match=r"FORWARDER_BREAKER_PROBE_MAX_S .*FORWARDER_BREAKER_PROBE_S"
    ):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "field"), [("DD_API_KEY", "dd_api_key"), ("DD_APP_KEY", "dd_app_key")]
)
def test_datadog_keys_never_shown(
    monkeypatch: pytest.MonkeyPatch, variable: str, field: str
) -> None:
    """The API and application keys are absent from the settings' repr, str and errors."""
    monkeypatch.setenv(variable, KEY)
    monkeypatch.setenv("FORWARDER_MAX_IN_FLIGHT", "0")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert KEY not in str(caught.value)
    monkeypatch.delenv("FORWARDER_MAX_IN_FLIGHT")
    settings = load_settings()
    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    secret = getattr(settings, field)
    assert secret is not None
    assert secret.get_secret_value() == KEY


def test_application_key_is_optional_and_empty_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only PATCH and DELETE need DD_APP_KEY; `DD_APP_KEY=` (an env file's blank) is unset."""
    assert load_settings().dd_app_key is None
    monkeypatch.setenv("DD_APP_KEY", " \n")
    assert load_settings().dd_app_key is None
    monkeypatch.setenv("DD_APP_KEY", f" {KEY}\n")
    settings = load_settings()
    assert settings.dd_app_key is not None
    assert settings.dd_app_key.get_secret_value() == KEY


@pytest.mark.parametrize(
    ("value", "on"), [("true", True), ("YES", True), ("1", True), ("0", False)]
)
def test_patch_by_version_is_off_unless_turned_on(
    monkeypatch: pytest.MonkeyPatch, value: str, on: bool
) -> None:
    """FORWARDER_PATCH_BY_VERSION turns on Datadog's preview; off when unset."""
    assert load_settings().patch_by_version is False
    monkeypatch.setenv("FORWARDER_PATCH_BY_VERSION", value)
    assert load_settings().patch_by_version is on


def test_patch_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """FORWARDER_PATCH_WAIT_S: an hour unless set; more than 0."""
    assert load_settings().patch_wait_s == 3600
    monkeypatch.setenv("FORWARDER_PATCH_WAIT_S", "60")
    assert load_settings().patch_wait_s == 60
    monkeypatch.setenv("FORWARDER_PATCH_WAIT_S", "0")
    with pytest.raises(SettingsError, match=r"FORWARDER_PATCH_WAIT_S: .*greater than 0"):
        load_settings()


def test_redis_password_masked() -> None:
    """A Redis password never reaches logs or the settings' repr."""
    url = "rediss://user:hunter2@redis.internal:6380/1"
    assert mask_url_password(url) == "rediss://user:***@redis.internal:6380/1"
    assert mask_url_password("redis://localhost:6379/0") == "redis://localhost:6379/0"
    settings = load_settings(redis_url=url)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.redis_url_for_logs


def test_api_key_loses_surrounding_whitespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key file's trailing newline (a Kubernetes secret made from a file) is not part of it."""
    monkeypatch.setenv("DD_API_KEY", f" {KEY}\n")
    settings = load_settings()
    assert settings.dd_api_key is not None
    assert settings.dd_api_key.get_secret_value() == KEY


@pytest.mark.parametrize(
    ("field", "variable", "value", "reason"),
    [
        ("dd_api_key", "DD_API_KEY", f"{KEY[:4]}\x00{KEY[4:]}", "control character"),
        ("dd_api_key", "DD_API_KEY", f"{KEY}é", "non-ASCII character"),
        ("dd_api_key", "DD_API_KEY", f"{KEY[:4]}\n{KEY[4:]}", "control character"),
        ("dd_app_key", "DD_APP_KEY", f"{KEY[:4]}\x00{KEY[4:]}", "control character"),
        ("dd_app_key", "DD_APP_KEY", f"{KEY}é", "non-ASCII character"),
        (
            "ingest_keys",
            "FORWARDER_INGEST_KEYS",
            f"k1, {KEY[:4]}\x7f{KEY[4:]}",
            "control character",
        ),
        ("ingest_keys", "FORWARDER_INGEST_KEYS", f"{KEY}é,k2", "non-ASCII character"),
    ],
)
def test_key_an_http_header_cannot_carry_is_refused_without_showing_it(
    field: str, variable: str, value: str, reason: str
) -> None:
    """A control or non-ASCII character in a key: refused, naming the variable, never the key."""
    # Passed as an override: an environment variable cannot hold a NUL.
    with pytest.raises(SettingsError) as caught:
        load_settings(**{field: value})
    message = str(caught.value)
    assert variable in message
    assert reason in message
    assert KEY[:4] not in message
    assert KEY[4:] not in message


def test_ingest_keys_may_be_separated_by_newlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whitespace around each ingest key (newlines too) stays allowed, as before."""
    monkeypatch.setenv("FORWARDER_INGEST_KEYS", "key-one,\nkey-two\n")
    settings = load_settings()
    assert settings.ingest_keys is not None
    assert settings.ingest_keys.get_secret_value().split(",")[0] == "key-one"


def test_hmac_secrets_may_be_any_text_the_gitlab_token_must_fit_a_header() -> None:
    """GitHub's and PagerDuty's secrets key an HMAC and never travel: non-ASCII is fine.
    GitLab sends its token in a header, so it is held to what a header can carry."""
    secrets = {"github_webhook_secret": " clé-secrète\n", "pagerduty_webhook_secret": "ß"}
    settings = load_settings(**secrets)
    assert settings.github_webhook_secret is not None
    assert settings.github_webhook_secret.get_secret_value() == "clé-secrète"
    assert load_settings(**{"github_webhook_secret": "  "}).github_webhook_secret is None
    with pytest.raises(SettingsError, match=r"FORWARDER_GITLAB_WEBHOOK_TOKEN: .*non-ASCII"):
        load_settings(**{"gitlab_webhook_token": "jeton-é"})
