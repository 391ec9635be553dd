"""Celery's Sentinel URL form, parsed: pure functions, no I/O (no Redis client loaded).

``sentinel://[user:password@]host:26379[/db];sentinel://host2:26379;...`` lists the sentinels
that watch a primary. As in kombu (Celery's transport), the password and the database are the
primary's (and its replicas'), read from the parts that name them (all must agree); the
sentinels themselves are asked without a password. A ``;`` in a password must be ``%3B``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_SENTINEL_PORT: Final = 26379
SENTINEL_MASTER_VARIABLE: Final = "FORWARDER_REDIS_SENTINEL_MASTER"
SENTINEL_SCHEME: Final = "sentinel"
AT_AFTER_HOST_REASON: Final = (
    "has an '@' after its host: percent-encode '/', '?', '#' and '@' in a password "
    "(%2F %3F %23 %40)"
)
_PART_SEPARATOR: Final = re.compile(r";(?=sentinel://)", re.IGNORECASE)
"""Split only where a new part starts: a stray ``;`` stays in its part (and is refused),
so that a password containing one is never cut in two and half of it shown."""


@dataclass(frozen=True, slots=True)
class SentinelAddress:
    """What a ``sentinel://`` URL says: where the sentinels are, how to log in to the primary."""

    sentinels: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int

    def __repr__(self) -> str:  # never the password
        shown = ", ".join(f"{host}:{port}" for host, port in self.sentinels)
        secret = "***" if self.password is not None else None
        return f"SentinelAddress(sentinels=[{shown}], password={secret}, db={self.db})"


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` is in Celery's Sentinel form (``sentinel://...``)."""
    return url[: len(SENTINEL_SCHEME) + 3].lower() == f"{SENTINEL_SCHEME}://"


def at_after_host(url: str) -> bool:
    """An ``@`` after a host that has none: a password with an unencoded ``/``, ``?`` or
    ``#`` (the host part ends at the first of those), whose rest then sits in the path,
    query or fragment. Such a URL is refused, and masked whole up to its last ``@``. (No
    host at all, ``unix:///run/redis@1.sock``: a socket's path may hold an ``@``.)"""
    netloc = urlsplit(url).netloc
    return bool(netloc) and "@" not in netloc and "@" in url.partition("//")[2][len(netloc) :]


def sentinel_parts(url: str) -> list[str]:
    """The ``;``-separated parts of a Sentinel URL, each one ``sentinel://...``."""
    return _PART_SEPARATOR.split(url)


def parse_sentinel_url(url: str) -> SentinelAddress:
    """The sentinels, credentials and database of a ``sentinel://`` URL.

    Raises ``ValueError`` (never showing a password) when a part is malformed or two parts
    disagree on the password or the database.
    """
    sentinels: list[tuple[str, int]] = []
    username = password = None
    db: int | None = None
    for number, part in enumerate(sentinel_parts(url), start=1):
        where = f"part {number} of the sentinel URL"
        if not is_sentinel_url(part):
            raise ValueError(f"{where} must start with sentinel://")
        if ";" in part:
            raise ValueError(
                f"{where} contains ';': parts are separated by ';sentinel://', "
                "and a ';' in a password is written %3B"
            )
        if at_after_host(part):
            raise ValueError(f"{where} {AT_AFTER_HOST_REASON}")
        parts = urlsplit(part)
        userinfo, at, _ = parts.netloc.rpartition("@")
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            raise ValueError(f"{where} has a port that is not a number") from None
        if not host:
            raise ValueError(f"{where} names no host")
        sentinels.append((host, port or DEFAULT_SENTINEL_PORT))
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        user, colon, written = userinfo.partition(":") if at else ("", "", "")
        part_password = unquote(written) if colon and written else query.get("password") or None
        if part_password is not None:
            if password is not None and part_password != password:
                raise ValueError(f"{where} has another password than an earlier part")
            password = part_password
            username = unquote(user) or username
        part_db = _database(parts.path, where)
        if part_db is not None:
            if db is not None and part_db != db:
                raise ValueError(f"{where} names another database than an earlier part")
            db = part_db
    return SentinelAddress(tuple(sentinels), username, password, db or 0)


def _database(path: str, where: str) -> int | None:
    text = path.strip("/")
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(f"{where}: the database must be a number, not {text[:20]!r}")
    return int(text)
