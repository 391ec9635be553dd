"""One typed settings object, built once at the entry point and passed down.

Every variable is read from the environment: ``DD_API_KEY`` and ``DD_SITE`` as Datadog's own
tools name them, everything else under the ``FORWARDER_`` prefix.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.redis_url import mask_url_password
from forwarder.sentinel_url import (
    AT_AFTER_HOST_REASON,
    at_after_host,
    is_sentinel_url,
    parse_sentinel_url,
)

_KEY_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


class Settings(BaseSettings):
    """Everything a producer, a worker or the CLI can be told, with its default."""

    model_config = SettingsConfigDict(
        env_prefix="FORWARDER_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    dd_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DD_API_KEY", "dd_api_key")
    )
    dd_app_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DD_APP_KEY", "dd_app_key")
    )
    """Datadog's application key: its PATCH and DELETE endpoints need it beside the API key
    (the POSTs do not). Never shown; empty means unset."""
    dd_site: str = Field(
        default="datadoghq.com", validation_alias=AliasChoices("DD_SITE", "dd_site")
    )
    api_url: str | None = None
    redis_url: str = Field(default="redis://localhost:6379/0", repr=False)
    """The Redis; a password in its user-info or its ``?password=`` (never printed). Or
    Celery's Sentinel form, ``sentinel://[:password@]host:26379[/db];sentinel://host2:26379``,
    with ``FORWARDER_REDIS_SENTINEL_MASTER``."""
    redis_sentinel_master: str | None = None
    """The name under which the sentinels monitor the primary (required with a sentinel URL)."""
    key_prefix: str = "dora"

    ingest_batch: int = Field(default=500, ge=1, le=10_000)
    max_in_flight: int = Field(default=128, ge=1, le=1_000)
    lease_s: float = Field(default=60.0, gt=0, le=3_600)
    http_timeout_s: float = Field(default=10.0, gt=0, le=300)
    publish_timeout_s: float = Field(default=1.0, gt=0, le=60)
    publish_replicas: int = Field(default=0, ge=0, le=100)
    """Replicas that must hold each write before it counts (``WAIT``): 0, the primary's word
    is enough. Producers (``Publisher``, ``publish``, ``serve``) refuse to acknowledge an
    event short of it; workers count and log a shortfall (their state is stored anyway)."""
    publish_replicas_timeout_s: float = Field(default=0.5, gt=0, le=5)
    """How long a write waits for ``FORWARDER_PUBLISH_REPLICAS`` acknowledgements.

    A setting of its own rather than ``FORWARDER_PUBLISH_TIMEOUT_S``: that one is the
    producers' socket timeout, which bounds each reply, the WAIT's included, so the WAIT must
    end first (a rule below) and leave room for the round trip; a replica that is up answers
    in about a round trip, so half a second only ever runs out when one is down or far behind.
    """
    reclaim_idle_s: float = Field(default=60.0, gt=0)
    orphan_wait_s: float = Field(default=6 * 3600.0, ge=0)
    patch_wait_s: float = Field(default=3600.0, gt=0)
    """How long a PATCH that Datadog answers 404 (it does not know the deployment yet:
    ingestion lag, or a POST from elsewhere still to come) is retried before its dead letter."""
    patch_by_version: bool = False
    """Send Datadog's preview PATCH by version (``PATCH /api/v2/dora/deployments``): off, the
    producers refuse it (``Publisher``, ``publish``, ``serve``)."""
    retention_s: float = Field(default=30 * 86_400.0, gt=0)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    max_age_s: float = Field(default=3 * 86_400.0, gt=0)
    auth_pause_s: float = Field(default=60.0, gt=0, le=3_600)
    finished_retention_s: float = Field(default=400 * 86_400.0, gt=0)
    """How long the finish of a delivered incident is remembered after its state expired, so
    that a late duplicate of its start never reopens it at Datadog."""
    breaker_failures: int = Field(default=10, ge=1, le=100_000)
    """Outage answers (5xx, 408, no answer) in a row, fleet-wide, that open the breaker."""
    breaker_probe_s: float = Field(default=1.0, gt=0, le=3_600)
    """While the breaker is open: the wait before its first probe; each next one doubles."""
    breaker_probe_max_s: float = Field(default=30.0, gt=0, le=3_600)
    """The longest wait between two probes of the open breaker."""
    max_requests_per_s: float | None = Field(default=None, gt=0)
    tick_s: float = Field(default=5.0, gt=0, le=60)
    """Beat's interval between ticks. A tick only starts a pump where none runs (at start, after
    a Redis outage): running pumps hand over to themselves."""
    task_budget_s: float = Field(default=30.0, gt=0, le=300)
    """How long one pump task works before it queues its own continuation. Each hand-over
    costs Celery's per-task work, so a longer run is a cheaper idle worker."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    metrics_port: int = Field(default=9641, ge=0, le=65_535)
    """Where a worker serves Prometheus metrics; 0 turns the endpoint off."""
    metrics_host: str = "127.0.0.1"
    """The address metrics listen on: loopback unless told (0.0.0.0 in a container)."""
    dry_run: bool = False
    """Print each request instead of sending it (``dora-forwarder run --dry-run``)."""
    dry_run_fd: int = Field(default=1, ge=1)
    """The file descriptor a dry run writes its requests to (``run`` sets it)."""
    spool_dir: str | None = None
    """Where ``publish`` spools events while Redis does not answer (``--spool`` overrides it);
    none: an unanswered publish fails. Producers in Python pass ``spool_dir`` themselves."""
    spool_max_bytes: int = Field(default=64 * 1_048_576, ge=4_096, le=1 << 40)
    """The spool file's largest size; past it a publish fails with ``SpoolFullError``."""
    data_dir: str | None = None
    """Where ``run`` keeps an embedded Redis' data, password and socket (made mode 0700)."""
    ingest_keys: SecretStr | None = None
    """Comma-separated keys producers send as DD-API-KEY to ``serve``; never Datadog's key."""
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(default=9642, ge=1, le=65_535)
    ingest_max_body_bytes: int = Field(default=1_048_576, ge=1_024, le=64 * 1_048_576)
    ingest_header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """Seconds a request's line and headers may take to arrive; then the connection is closed."""
    ingest_body_timeout_s: float = Field(default=30.0, gt=0, le=3_600)
    """Seconds a request's body may take to arrive, from its headers; then a 408."""
    ingest_max_connections: int = Field(default=256, ge=1, le=100_000)
    """Connections the ingest endpoint serves at once; a request on one more gets a 503."""
    ingest_refusal_log_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    """At most one WARNING per reason per this many seconds for refused requests, with a count."""
    ingest_tls_certfile: str | None = None
    ingest_tls_keyfile: str | None = None
    alertmanager_source: bool = False
    """Serve ``POST /sources/alertmanager`` (Alertmanager sends an ingest key as its Bearer)."""
    pagerduty_webhook_secret: SecretStr | None = None
    """The secret of the PagerDuty webhook subscription; set, ``/sources/pagerduty`` is on."""
    github_webhook_secret: SecretStr | None = None
    """The secret of the GitHub webhook; set, ``/sources/github`` is on."""
    gitlab_webhook_token: SecretStr | None = None
    """The secret token of the GitLab hook; set, ``/sources/gitlab`` is on."""
    sources_file: str | None = None
    """A TOML file overriding how the sources map their payloads (none: the defaults)."""

    @field_validator("dd_api_key")
    @classmethod
    def _api_key(cls, value: SecretStr | None) -> SecretStr | None:
        return _datadog_key(value)

    @field_validator("dd_app_key")
    @classmethod
    def _app_key(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty is unset: `DD_APP_KEY=` in an env file (compose's) says "no application key".
        key = _datadog_key(value)
        return key if key is not None and key.get_secret_value() else None

    @field_validator("ingest_keys")
    @classmethod
    def _ingest_keys(cls, value: SecretStr | None) -> SecretStr | None:
        # Whitespace around each key is ignored where the keys are parsed (``parse_keys``).
        if value is None:
            return None
        text = value.get_secret_value().strip()
        for key in text.split(","):
            _refuse_unsendable(key.strip())
        return SecretStr(text)

    @field_validator("pagerduty_webhook_secret", "github_webhook_secret")
    @classmethod
    def _hmac_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # An HMAC key never travels in a header: any text will do (UTF-8 is what GitHub and
        # PagerDuty sign with). Surrounding whitespace is a file's newline; empty is unset.
        if value is None or not value.get_secret_value().strip():
            return None
        return SecretStr(value.get_secret_value().strip())

    @field_validator("gitlab_webhook_token")
    @classmethod
    def _gitlab_token(cls, value: SecretStr | None) -> SecretStr | None:
        # GitLab sends the token itself in a header: it must be one a header can carry.
        # Empty is unset (`FORWARDER_GITLAB_WEBHOOK_TOKEN=` in an env file: source off).
        token = _datadog_key(value)
        return token if token is not None and token.get_secret_value() else None

    @field_validator("dd_site")
    @classmethod
    def _bare_site(cls, value: str) -> str:
        site = value.strip().lower()
        if not site or "/" in site or site.startswith(("api.", "app.")):
            raise ValueError("must be a bare site such as datadoghq.com or datadoghq.eu")
        return site

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http:// or https:// base URL, e.g. http://127.0.0.1:8080")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if is_sentinel_url(value):
            parse_sentinel_url(value)  # its errors never show the password
            return value
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss://, unix:// or sentinel://")
        if at_after_host(value):  # redis-py's error would show the password's first half
            raise ValueError(AT_AFTER_HOST_REASON)
        return value

    @field_validator("redis_sentinel_master")
    @classmethod
    def _sentinel_master(cls, value: str | None) -> str | None:
        # Empty is unset (`FORWARDER_REDIS_SENTINEL_MASTER=` in an env file).
        name = (value or "").strip()
        if any(c.isspace() or ord(c) < 0x20 for c in name):
            raise ValueError("must be a master name as Sentinel knows it, without spaces")
        return name or None

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not _KEY_PREFIX_PATTERN.match(value):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 . _ : -")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Every rule across variables at once, each naming its variables and their values."""
        problems = inconsistencies(self)
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @model_validator(mode="after")
    def _probes_spaced_upwards(self) -> Self:
        if self.breaker_probe_max_s < self.breaker_probe_s:
            raise ValueError(
                "FORWARDER_BREAKER_PROBE_MAX_S must be at least FORWARDER_BREAKER_PROBE_S: "
                "the wait between the breaker's probes grows from the one to the other"
            )
        return self

    @property
    def api_base_url(self) -> str:
        """Where requests go: ``FORWARDER_API_URL`` if set, else ``https://api.<DD_SITE>``."""
        return self.api_url or f"https://api.{self.dd_site}"

    @property
    def redis_url_for_logs(self) -> str:
        """The Redis URL with every password (user-info or query) masked, safe to print."""
        return mask_url_password(self.redis_url)


LEASE_SLACK_S = 2.0
"""A lease outlasts the HTTP timeout by this much: the sender cuts a request off 1 s after
``FORWARDER_HTTP_TIMEOUT_S`` (a hard bound), and a claim takes a moment to start its request."""


def _datadog_key(value: SecretStr | None) -> SecretStr | None:
    """A Datadog key as given, without surrounding whitespace; refused if no header can carry it.

    A key file's trailing newline (a Kubernetes secret made from a file) is not part of the
    key; left in, the HTTP client refuses the header and nothing is delivered.
    """
    if value is None:
        return None
    key = value.get_secret_value().strip()
    _refuse_unsendable(key)
    return SecretStr(key)


def _refuse_unsendable(key: str) -> None:
    """Raise if an HTTP header cannot carry ``key``; the message never shows the key."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValueError(
            "contains a control character (after removing surrounding whitespace); "
            "an HTTP header cannot carry it: check how the secret was written"
        )
    if not key.isascii():
        raise ValueError(
            "contains a non-ASCII character; an HTTP header cannot carry it: "
            "check how the secret was written"
        )


def _s(value: float) -> str:
    return f"{value:.15g} s"  # 2592000 s, not 2.592e+06 s


def inconsistencies(settings: Settings) -> list[str]:
    """What is wrong between variables that are each valid alone (empty if nothing).

    Each rule guards a hazard: a claim that lapses while its request is still in flight (a
    second worker sends the same incident at the same time), or a delivered finish forgotten
    while its state is still remembered (a late start could reopen it).
    """
    s = settings
    problems = []
    if s.lease_s < s.http_timeout_s + LEASE_SLACK_S:
        problems.append(
            f"FORWARDER_LEASE_S ({_s(s.lease_s)}) must be at least FORWARDER_HTTP_TIMEOUT_S "
            f"({_s(s.http_timeout_s)}) + {_s(LEASE_SLACK_S)}: a request could outlive its "
            "claim, and a second worker send the same incident while it is still in flight"
        )
    # The retention no longer races the max age or the orphan wait: a state still to send
    # never expires (the scripts clear its expiry while it is scheduled), so a short
    # retention only shortens the dedupe horizon. The finish record must outlive the state.
    if s.publish_replicas and s.publish_replicas_timeout_s >= s.publish_timeout_s:
        problems.append(
            f"FORWARDER_PUBLISH_REPLICAS_TIMEOUT_S ({_s(s.publish_replicas_timeout_s)}) must be "
            f"less than FORWARDER_PUBLISH_TIMEOUT_S ({_s(s.publish_timeout_s)}): the socket "
            "would give up on Redis before its WAIT could say how many replicas hold the event"
        )
    if s.finished_retention_s < s.retention_s:
        problems.append(
            f"FORWARDER_FINISHED_RETENTION_S ({_s(s.finished_retention_s)}) must be at least "
            f"FORWARDER_RETENTION_S ({_s(s.retention_s)}): the record of a delivered finish "
            "is what protects it once the state has expired"
        )
    if is_sentinel_url(s.redis_url) and s.redis_sentinel_master is None:
        problems.append(
            f"FORWARDER_REDIS_URL ({s.redis_url_for_logs}) is a sentinel:// URL: set "
            "FORWARDER_REDIS_SENTINEL_MASTER to the name under which the sentinels monitor "
            "the primary (their `sentinel monitor <name> ...`)"
        )
    return problems


def _variable_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"FORWARDER_{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment (``overrides`` win), or raise ``SettingsError``.

    The error lists every bad variable by its environment name and says why, e.g.
    ``FORWARDER_MAX_IN_FLIGHT: Input should be greater than or equal to 1``.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across variables names them in its message
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            field = str(error["loc"][0])
            name = _variable_name(field) if field in Settings.model_fields else field
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems)) from None
