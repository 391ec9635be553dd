"""Event ids derived from a source's own ids: the same notification always gives the same id,
so a re-sent one folds into the state it made and costs no request. Pure."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from forwarder.rules import ID_PATTERN

HASHED_CHARS = 40


def source_id(source: str, *native: str) -> str:
    """``<source>-<native parts joined by ':'>`` when Datadog accepts it as an id, else the
    source followed by a hash of the parts (an id with other characters, or too long)."""
    readable = f"{source}-{':'.join(native)}"
    if ID_PATTERN.fullmatch(readable):
        return readable
    digest = hashlib.sha256("\x00".join(native).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{source}-{digest[:HASHED_CHARS]}"


def instance_of(url: str | None) -> str:
    """The host of a GitHub or GitLab URL: deployment ids are unique within one instance
    only (github.com and a GitHub Enterprise server count theirs apart), so the id names it.
    Empty when the URL names no host."""
    try:
        return (urlsplit(url).hostname or "") if url else ""
    except ValueError:  # an unbalanced [ in the host
        return ""
