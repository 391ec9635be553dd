"""``POST /sources/<source>`` refused: no proof (401), a wrong one (403), off (404), too large
(413), not JSON (415), Redis down (503); and no secret in any log record, answer or repr.

A refused delivery enqueues nothing. Each source's proof is checked before its payload is
parsed: a body that is not JSON, or very large, with a wrong proof is still a 401 or a 403
(Alertmanager's and GitLab's proof is a header alone: checked before a byte is read).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from config import Settings, load_settings
from tests.ingest.sources.support import (
    DATADOG_KEY,
    GITHUB_SECRET,
    GITLAB_TOKEN,
    INGEST_KEY,
    PAGERDUTY_SECRET,
    SECRETS,
    SOURCES,
    deliver,
    hmac_hex,
    proof,
    raw,
    secrets_logged,
    serving,
    source_settings,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_env", "no_secret_logged")]

LIMIT_BYTES = 2048
VALID: dict[str, bytes] = {
    "alertmanager": raw("alertmanager_firing").replace(b'"host"', b'"service"'),
    "pagerduty": raw("pagerduty_incident_triggered"),
    "github": raw("github_deployment_status_success"),
    "gitlab": raw("gitlab_deployment_success"),
}
"""A delivery of each source that its proof turns into a 202."""
MISSING_HEADER = {
    "alertmanager": "Authorization",
    "pagerduty": "X-PagerDuty-Signature",
    "github": "X-Hub-Signature-256",
    "gitlab": "X-Gitlab-Token",
}
OTHER_BODY = raw("github_deployment_status_in_progress")


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    return source_settings(redis_url, prefix, ingest_max_body_bytes=LIMIT_BYTES * 16)


def _basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"alertmanager:{secret}".encode()).decode()


# --- 401, 403 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
async def test_each_valid_delivery_is_accepted(
    http: httpx.AsyncClient, stream: Any, source: str
) -> None:
    """The control for the refusals below: the same bodies with their proof are 202."""
    response = await deliver(http, source, VALID[source])
    assert response.status_code == 202, response.text
    assert stream()


@pytest.mark.parametrize("source", SOURCES)
async def test_no_proof_is_401_naming_the_header(
    http: httpx.AsyncClient, stream: Any, source: str
) -> None:
    response = await deliver(http, source, VALID[source], signed=False)
    assert response.status_code == 401, response.text
    (message,) = response.json()["errors"]
    assert message.startswith("Unauthorized: ")
    assert MISSING_HEADER[source] in message
    assert stream() == []


WRONG_PROOFS: list[tuple[str, dict[str, str]]] = [
    ("alertmanager", {"Authorization": f"Bearer {INGEST_KEY}x"}),
    ("alertmanager", {"Authorization": f"Bearer {DATADOG_KEY}"}),
    ("alertmanager", {"Authorization": f"Token {INGEST_KEY}"}),
    ("alertmanager", {"Authorization": _basic(INGEST_KEY)}),
    ("alertmanager", {"Authorization": "Bearer"}),
    ("alertmanager", {"Authorization": ""}),
    ("alertmanager", {"Authorization": f"Bearer {INGEST_KEY[:-1]}"}),
    ("pagerduty", {"X-PagerDuty-Signature": f"v1={hmac_hex(PAGERDUTY_SECRET, OTHER_BODY)}"}),
    ("pagerduty", {"X-PagerDuty-Signature": f"v1={PAGERDUTY_SECRET}"}),
    (
        "pagerduty",
        {"X-PagerDuty-Signature": f"v0={hmac_hex(PAGERDUTY_SECRET, VALID['pagerduty'])}"},
    ),
    ("pagerduty", {"X-PagerDuty-Signature": ""}),
    ("pagerduty", {"X-PagerDuty-Signature": "v1=,v1="}),
    ("github", {"X-Hub-Signature-256": f"sha256={hmac_hex(GITHUB_SECRET, OTHER_BODY)}"}),
    ("github", {"X-Hub-Signature-256": f"sha256={hmac_hex(PAGERDUTY_SECRET, VALID['github'])}"}),
    ("github", {"X-Hub-Signature-256": f"sha256={GITHUB_SECRET}"}),
    ("github", {"X-Hub-Signature-256": hmac_hex(GITHUB_SECRET, VALID["github"])}),
    ("github", {"X-Hub-Signature-256": "sha256="}),
    ("gitlab", {"X-Gitlab-Token": GITLAB_TOKEN + "x"}),
    ("gitlab", {"X-Gitlab-Token": GITLAB_TOKEN.upper()}),
    ("gitlab", {"X-Gitlab-Token": GITHUB_SECRET}),
    ("gitlab", {"X-Gitlab-Token": ""}),
]
"""Proofs that are there and wrong: other bodies, other secrets, other schemes; and the
secrets themselves sent where a signature belongs (they must not be echoed or logged)."""


@pytest.mark.parametrize(("source", "headers"), WRONG_PROOFS)
async def test_a_wrong_proof_is_403_and_nothing_is_enqueued(
    http: httpx.AsyncClient, stream: Any, source: str, headers: dict[str, str]
) -> None:
    response = await deliver(http, source, VALID[source], headers)
    assert response.status_code == 403, response.text
    assert response.json() == {"errors": ["Forbidden"]}
    assert stream() == []


async def test_two_authorization_headers_are_403_even_both_valid(
    http: httpx.AsyncClient, stream: Any
) -> None:
    """Which of two headers counts is up to each proxy: neither does."""
    bearer = f"Bearer {INGEST_KEY}"
    response = await http.post(
        "/sources/alertmanager",
        content=VALID["alertmanager"],
        headers=[("Authorization", bearer), ("Authorization", bearer)],
    )
    assert response.status_code == 403, response.text
    assert stream() == []


@pytest.mark.parametrize(
    "signatures",
    [
        "v1={old},v1={new}",
        "v1={new},v1={old}",
        "v1={old}, v1={new}",
        "v0={new},v1={new}",
    ],
)
async def test_pagerduty_rotation_one_valid_signature_suffices(
    http: httpx.AsyncClient, stream: Any, signatures: str
) -> None:
    """During a rotation PagerDuty signs with both secrets; either one being ours is enough."""
    body = VALID["pagerduty"]
    old = hmac_hex("the-previous-secret", body)
    header = signatures.format(old=old, new=hmac_hex(PAGERDUTY_SECRET, body))
    response = await deliver(http, "pagerduty", body, {"X-PagerDuty-Signature": header})
    assert response.status_code == 202, response.text
    assert len(stream()) == 1


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    "body", [b'{"alerts": [', b"\xff\xfe not UTF-8", b"[" * 20_000, b"x" * LIMIT_BYTES * 15]
)
async def test_a_body_that_is_not_json_with_a_wrong_proof_is_still_403(
    http: httpx.AsyncClient, stream: Any, source: str, body: bytes
) -> None:
    """The proof comes first: a wrong one is a 403 whatever the body (never a 400)."""
    wrong = {
        "alertmanager": {"Authorization": "Bearer not-a-key"},
        "pagerduty": {"X-PagerDuty-Signature": "v1=00"},
        "github": {"X-Hub-Signature-256": "sha256=00"},
        "gitlab": {"X-Gitlab-Token": "not-the-token"},
    }[source]
    response = await deliver(http, source, body, wrong)
    assert response.status_code == 403, response.text
    missing = await deliver(http, source, body, signed=False)
    assert missing.status_code == 401, missing.text
    assert stream() == []


@pytest.mark.parametrize("source", ["alertmanager", "gitlab"])
async def test_a_header_proof_is_refused_before_a_body_over_the_limit_is_read(
    http: httpx.AsyncClient, stream: Any, source: str
) -> None:
    """Alertmanager's and GitLab's proof is a header: wrong, even a huge body is a 403."""
    body = b"x" * LIMIT_BYTES * 32
    wrong = {"alertmanager": {"Authorization": "Bearer 0"}, "gitlab": {"X-Gitlab-Token": "0"}}
    response = await deliver(http, source, body, wrong[source])
    assert response.status_code == 403, response.text
    assert stream() == []


# --- 415 ----------------------------------------------------------------------------------


async def test_github_form_encoding_is_415(http: httpx.AsyncClient, stream: Any) -> None:
    """GitHub's other content type, properly signed: 415 saying to choose JSON."""
    body = urlencode({"payload": raw("github_deployment_status_success").decode()}).encode()
    response = await deliver(
        http, "github", body, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["errors"][0]
    assert stream() == []


# --- secrets ----------------------------------------------------------------------------------


async def test_refusals_are_logged_without_what_was_sent(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Every wrong proof above, each secret among them: logged by reason, no secret shown."""
    for source, headers in WRONG_PROOFS:
        assert (await deliver(http, source, VALID[source], headers)).status_code == 403
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for reason in (
        "alertmanager: a Bearer key that is not one of FORWARDER_INGEST_KEYS",
        "pagerduty: an X-PagerDuty-Signature with no v1= signature",
        "github: an X-Hub-Signature-256 that does not match the body and the secret",
        "gitlab: an X-Gitlab-Token that is not FORWARDER_GITLAB_WEBHOOK_TOKEN",
    ):
        assert reason in logged
    assert not secrets_logged(caplog)


def test_the_settings_repr_shows_no_secret(redis_url: str, prefix: str) -> None:
    """The settings as an error, a debugger or a log line would show them."""
    settings = source_settings(redis_url, prefix)
    assert settings.github_webhook_secret == SecretStr(GITHUB_SECRET)
    for shown in (repr(settings), str(settings), repr(settings.model_dump())):
        assert not [secret for secret in SECRETS if secret in shown], shown


def test_the_settings_read_from_the_environment_show_no_secret(
    monkeypatch: pytest.MonkeyPatch, redis_env: None
) -> None:
    """The same, from the variables an operator sets."""
    monkeypatch.setenv("FORWARDER_INGEST_KEYS", INGEST_KEY)
    monkeypatch.setenv("DD_API_KEY", DATADOG_KEY)
    monkeypatch.setenv("FORWARDER_PAGERDUTY_WEBHOOK_SECRET", PAGERDUTY_SECRET)
    monkeypatch.setenv("FORWARDER_GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)
    monkeypatch.setenv("FORWARDER_GITLAB_WEBHOOK_TOKEN", GITLAB_TOKEN)
    settings = load_settings()
    assert settings.gitlab_webhook_token is not None
    assert settings.gitlab_webhook_token.get_secret_value() == GITLAB_TOKEN
    assert not [secret for secret in SECRETS if secret in repr(settings)]


@pytest.mark.parametrize("source", SOURCES)
async def test_a_source_that_is_off_is_404_naming_its_setting(
    redis_url: str, prefix: str, source: str
) -> None:
    """Only the ingest keys set: every source is off and says what turns it on."""
    off = source_settings(
        redis_url,
        prefix,
        alertmanager_source=False,
        pagerduty_webhook_secret=None,
        github_webhook_secret=None,
        gitlab_webhook_token=None,
    )
    setting = {
        "alertmanager": "FORWARDER_ALERTMANAGER_SOURCE=true",
        "pagerduty": "FORWARDER_PAGERDUTY_WEBHOOK_SECRET",
        "github": "FORWARDER_GITHUB_WEBHOOK_SECRET",
        "gitlab": "FORWARDER_GITLAB_WEBHOOK_TOKEN",
    }[source]
    async with serving(off) as client:
        response = await deliver(client, source, b"{}")
    assert response.status_code == 404
    (message,) = response.json()["errors"]
    assert source in message
    assert setting in message


async def test_an_unknown_source_is_404_listing_the_sources(http: httpx.AsyncClient) -> None:
    response = await http.post("/sources/jenkins", content=b"{}")
    assert response.status_code == 404
    (message,) = response.json()["errors"]
    assert all(source in message for source in SOURCES)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("declared", [True, False])
async def test_a_body_over_the_limit_is_413(
    redis_url: str, prefix: str, source: str, declared: bool
) -> None:
    """Properly signed and too large, with or without Content-Length: 413, nothing stored."""
    limit = 2048
    settings = source_settings(redis_url, prefix, ingest_max_body_bytes=limit)
    body = b'{"pad": "' + b"x" * limit + b'"}'
    async with serving(settings) as client:
        if declared:
            response = await deliver(client, source, body)
        else:  # chunked: the size is known only as the bytes arrive

            async def chunks() -> AsyncIterator[bytes]:
                yield body

            response = await client.post(
                f"/sources/{source}",
                content=chunks(),
                headers={"Content-Type": "application/json", **proof(source, body)},
            )
    assert response.status_code == 413, response.text
    assert str(limit) in response.json()["errors"][0]


@pytest.mark.parametrize(
    ("source", "body"),
    [
        ("alertmanager", VALID["alertmanager"]),
        ("gitlab", raw("gitlab_deployment_running")),  # its status is kept in Redis
        ("pagerduty", VALID["pagerduty"]),
    ],
)
async def test_redis_down_is_503_with_retry_after(
    redis_url: str, prefix: str, source: str, body: Any
) -> None:
    """Nothing is acknowledged that Redis did not take: 503, Retry-After, send again."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = source_settings(f"redis://127.0.0.1:{closed}/0", prefix)
    async with serving(down) as client:
        response = await deliver(client, source, body)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert "send again" in response.json()["errors"][0]
