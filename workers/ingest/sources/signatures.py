"""How each source proves a webhook is its own, checked in constant time. Pure.

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.
- PagerDuty: ``X-PagerDuty-Signature: v1=<hex>,v1=<hex>`` (HMAC-SHA256 of the raw body;
  several while a secret is rotated: any one valid suffices).
- GitLab: ``X-Gitlab-Token``, the hook's secret token itself.
- Alertmanager: ``Authorization: Bearer <ingest key>`` (checked by ``IngestKeys``).

Each check says why it refuses (for the log), never showing what was sent.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

GITHUB_PREFIX: Final = "sha256="
PAGERDUTY_PREFIX: Final = "v1="
MAX_PAGERDUTY_SIGNATURES: Final = 10
"""Signatures read from one header; PagerDuty sends one, or a few during a rotation."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a delivery is refused: ``missing`` (no proof at all: 401) or a wrong one (403)."""

    reason: str
    missing: bool = False


def _hmac_hex(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")


def github_refusal(secret: bytes, body: bytes, header: str | None) -> Refusal | None:
    """Why a GitHub delivery's signature is refused, or None when it is valid."""
    if header is None:
        return Refusal("no X-Hub-Signature-256 header (set the webhook's secret in GitHub)", True)
    presented = header.strip()
    if not presented.startswith(GITHUB_PREFIX):
        return Refusal("an X-Hub-Signature-256 header that is not sha256=<hex>")
    expected = _hmac_hex(secret, body)
    if hmac.compare_digest(presented[len(GITHUB_PREFIX) :].encode("latin-1"), expected):
        return None
    return Refusal("an X-Hub-Signature-256 that does not match the body and the secret")


def pagerduty_refusal(secret: bytes, body: bytes, header: str | None) -> Refusal | None:
    """Why a PagerDuty delivery's signatures are refused, or None when one is valid."""
    if header is None:
        return Refusal("no X-PagerDuty-Signature header", True)
    expected = _hmac_hex(secret, body)
    signatures = [part.strip() for part in header.split(",")][:MAX_PAGERDUTY_SIGNATURES]
    matched = False
    for signature in signatures:
        if signature.startswith(PAGERDUTY_PREFIX):
            candidate = signature[len(PAGERDUTY_PREFIX) :].encode("latin-1")
            matched |= hmac.compare_digest(candidate, expected)
    if matched:
        return None
    return Refusal("an X-PagerDuty-Signature with no v1= signature matching the body and secret")


def token_refusal(token: bytes, header: str | None) -> Refusal | None:
    """Why a GitLab delivery's ``X-Gitlab-Token`` is refused, or None when it is the token."""
    if header is None:
        return Refusal("no X-Gitlab-Token header (set the hook's secret token in GitLab)", True)
    if hmac.compare_digest(header.strip().encode("latin-1"), token):
        return None
    return Refusal("an X-Gitlab-Token that is not FORWARDER_GITLAB_WEBHOOK_TOKEN")
