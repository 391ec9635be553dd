"""How each source's proof is checked: GitHub's and PagerDuty's HMACs, GitLab's token.

Each refusal says why (for the log, and a 401 or 403), never showing the secret or what
was sent."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from workers.ingest.sources.signatures import (
    MAX_PAGERDUTY_SIGNATURES,
    Refusal,
    github_refusal,
    pagerduty_refusal,
    token_refusal,
)

GITHUB_DOCS_SECRET = b"It's a Secret to Everybody"
GITHUB_DOCS_BODY = b"Hello, World!"
GITHUB_DOCS_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
"""GitHub's documented test vector (validating-webhook-deliveries.md, see SOURCES.md)."""

SECRET = b"whsec-rotating-secret-0001"
OLD_SECRET = b"whsec-retired-secret-0000"
BODY = b'{"event":{"event_type":"incident.triggered"}}'


def v1(secret: bytes, body: bytes = BODY) -> str:
    return "v1=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def assert_discreet(refusal: Refusal | None, *never: str) -> Refusal:
    """A refusal whose reason shows neither the secret nor any part of what was presented."""
    assert refusal is not None
    assert refusal.reason
    for value in never:
        hidden = value.removeprefix("sha256=").removeprefix("v1=")
        assert not hidden or hidden not in refusal.reason
    return refusal


def test_github_accepts_its_documented_test_vector() -> None:
    """secret "It's a Secret to Everybody", body "Hello, World!" -> the documented sha256."""
    assert github_refusal(GITHUB_DOCS_SECRET, GITHUB_DOCS_BODY, GITHUB_DOCS_SIGNATURE) is None
    padded = f"  {GITHUB_DOCS_SIGNATURE} "
    assert github_refusal(GITHUB_DOCS_SECRET, GITHUB_DOCS_BODY, padded) is None


def test_github_without_a_header_is_missing_proof() -> None:
    """No X-Hub-Signature-256: a 401 that says to set the secret in GitHub."""
    refusal = github_refusal(GITHUB_DOCS_SECRET, GITHUB_DOCS_BODY, None)
    assert refusal == Refusal(
        "no X-Hub-Signature-256 header (set the webhook's secret in GitHub)", missing=True
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (
            "sha256=" + "0" * 64,
            "an X-Hub-Signature-256 that does not match the body and the secret",
        ),
        (GITHUB_DOCS_SIGNATURE.upper(), "an X-Hub-Signature-256 header that is not sha256=<hex>"),
        (GITHUB_DOCS_SIGNATURE[:-1], "does not match the body and the secret"),
        (GITHUB_DOCS_SIGNATURE.replace("sha256", "sha1"), "that is not sha256=<hex>"),
        ("", "that is not sha256=<hex>"),
        ("sha256=", "does not match the body and the secret"),
        ("sha256=" + "ÿ" * 64, "does not match the body and the secret"),
    ],
)
def test_github_wrong_signature_is_refused_without_showing_it(header: str, reason: str) -> None:
    """A wrong, cut or mis-prefixed signature is a 403; the reason shows neither value."""
    refusal = github_refusal(GITHUB_DOCS_SECRET, GITHUB_DOCS_BODY, header)
    refusal = assert_discreet(refusal, header, GITHUB_DOCS_SECRET.decode())
    assert not refusal.missing
    assert reason in refusal.reason


def test_github_signature_covers_the_body_and_the_secret() -> None:
    """The documented signature fails for another body, or another secret."""
    assert github_refusal(GITHUB_DOCS_SECRET, b"Hello, World?", GITHUB_DOCS_SIGNATURE)
    assert github_refusal(b"It's a Secret to Nobody", GITHUB_DOCS_BODY, GITHUB_DOCS_SIGNATURE)


@pytest.mark.parametrize(
    "header",
    [
        v1(SECRET),
        f"{v1(OLD_SECRET)},{v1(SECRET)}",
        f"{v1(SECRET)}, {v1(OLD_SECRET)}",
        f"v0=abc, {v1(SECRET)}",
        f"{v1(SECRET, b'another body')},{v1(SECRET)}",
    ],
)
def test_pagerduty_any_one_valid_v1_signature_suffices(header: str) -> None:
    """During a rotation PagerDuty sends several: one matching the body and secret is enough."""
    assert pagerduty_refusal(SECRET, BODY, header) is None


def test_pagerduty_documented_header_shape_with_two_signatures() -> None:
    """The docs' example header (two v1 entries): each of the two secrets is accepted."""
    header = f"{v1(b'first secret')},{v1(b'second secret')}"
    assert pagerduty_refusal(b"first secret", BODY, header) is None
    assert pagerduty_refusal(b"second secret", BODY, header) is None
    assert pagerduty_refusal(b"third secret", BODY, header) is not None


def test_pagerduty_without_a_header_is_missing_proof() -> None:
    """No X-PagerDuty-Signature: a 401."""
    assert pagerduty_refusal(SECRET, BODY, None) == Refusal(
        "no X-PagerDuty-Signature header", missing=True
    )


@pytest.mark.parametrize(
    "header",
    [
        v1(OLD_SECRET),
        f"{v1(OLD_SECRET)},{v1(b'other')}",
        v1(SECRET).replace("v1=", "v2="),
        v1(SECRET).upper(),
        v1(SECRET)[:-2],
        "",
        ",,,",
        "v1=",
    ],
)
def test_pagerduty_no_valid_signature_is_refused_without_showing_any(header: str) -> None:
    """No matching v1 entry: a 403 whose reason shows no signature and not the secret."""
    refusal = assert_discreet(pagerduty_refusal(SECRET, BODY, header), SECRET.decode())
    for part in filter(None, (item.strip() for item in header.split(","))):
        assert_discreet(refusal, part)
    assert not refusal.missing
    assert refusal.reason == (
        "an X-PagerDuty-Signature with no v1= signature matching the body and secret"
    )


def test_pagerduty_reads_a_bounded_number_of_signatures() -> None:
    """A valid signature after the first MAX_PAGERDUTY_SIGNATURES entries is not looked at."""
    filler = [v1(b"other")] * MAX_PAGERDUTY_SIGNATURES
    assert pagerduty_refusal(SECRET, BODY, ",".join([*filler, v1(SECRET)])) is not None
    assert pagerduty_refusal(SECRET, BODY, ",".join([*filler[1:], v1(SECRET)])) is None


TOKEN = b"glpat-hook-token-1234"


@pytest.mark.parametrize("header", ["glpat-hook-token-1234", " glpat-hook-token-1234 "])
def test_gitlab_token_equal_to_the_setting_is_accepted(header: str) -> None:
    """X-Gitlab-Token is the hook's secret token itself (surrounding blanks dropped)."""
    assert token_refusal(TOKEN, header) is None


def test_gitlab_without_a_token_is_missing_proof() -> None:
    """No X-Gitlab-Token: a 401 that says where to set it."""
    assert token_refusal(TOKEN, None) == Refusal(
        "no X-Gitlab-Token header (set the hook's secret token in GitLab)", missing=True
    )


@pytest.mark.parametrize(
    "header", ["glpat-hook-token-123", "glpat-hook-token-12345", "GLPAT-HOOK-TOKEN-1234", ""]
)
def test_gitlab_wrong_token_is_refused_without_showing_either(header: str) -> None:
    """A token that is not the setting is a 403; the reason names the setting, not a value."""
    refusal = assert_discreet(token_refusal(TOKEN, header), TOKEN.decode(), header)
    assert not refusal.missing
    assert refusal.reason == "an X-Gitlab-Token that is not FORWARDER_GITLAB_WEBHOOK_TOKEN"
