"""Redis URLs: where a password hides in them, how to print them, how Celery must be given them.

A password can sit in a URL's user-info (``redis://:pw@host/0``, ``unix://:pw@/path``) or in
its query (``redis://host/0?password=pw``, ``unix:///path?password=pw``), percent-encoded or
not. redis-py reads both (the user-info wins); kombu, Celery's transport, reads only the
user-info, does not know ``unix://`` and fails on ``?password=``: ``broker_url`` rewrites a
URL into the form kombu reads. Celery's Sentinel form is a ``;``-separated list of
``sentinel://`` URLs, each of which may carry a password: every function here reads each
part. Pure functions, no I/O.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import SplitResult, parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

from forwarder.sentinel_url import (
    at_after_host,
    is_sentinel_url,
    parse_sentinel_url,
    sentinel_parts,
)

MASK: Final = "***"
CREDENTIAL_PARAMS: Final = frozenset({"password"})
"""Query parameters (case-insensitive) whose value is a secret."""


def _split_netloc(netloc: str) -> tuple[str | None, str | None, str]:
    """``(user, password, host[:port])`` as written (still percent-encoded)."""
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    user, colon, password = userinfo.partition(":")
    return user, (password if colon else None), hostport


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """The query's pairs as written (still percent-encoded), empty values kept."""
    pairs = []
    for item in query.split("&"):
        if item:
            name, _, value = item.partition("=")
            pairs.append((name, value))
    return pairs


def _is_credential(name: str) -> bool:
    return unquote_plus(name).lower() in CREDENTIAL_PARAMS


def written_passwords(url: str) -> list[str]:
    """Every password in ``url`` as written (user-info and query), possibly percent-encoded."""
    if is_sentinel_url(url):
        return [found for part in sentinel_parts(url) for found in _written_passwords(part)]
    return _written_passwords(url)


def _written_passwords(url: str) -> list[str]:
    parts = urlsplit(url)
    _, password, _ = _split_netloc(parts.netloc)
    found = [password] if password else []
    found.extend(v for k, v in _query_pairs(parts.query) if _is_credential(k) and v)
    return found


def redis_password(url: str) -> str | None:
    """The password a client connects with: the user-info's, else the query's; decoded.

    For a Sentinel URL, the first part's that has one (the primary's password).
    """
    if is_sentinel_url(url):
        return next(filter(None, map(_redis_password, sentinel_parts(url))), None)
    return _redis_password(url)


def _redis_password(url: str) -> str | None:
    parts = urlsplit(url)
    _, password, _ = _split_netloc(parts.netloc)
    if password:
        return unquote(password)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in CREDENTIAL_PARAMS and value:
            return value
    return None


def password_forms(url: str) -> set[str]:
    """Each password of ``url`` in every form a line of output might show it.

    As written, decoded (``%xx``, and ``+`` as a space, as query parsers do), and encoded
    again the ways kombu and the standard library encode (a library may rebuild the URL).
    """
    forms: set[str] = set()
    for written in written_passwords(url):
        for decoded in {unquote(written), unquote_plus(written)}:
            forms.update(
                {written, decoded, quote(decoded, safe=""), quote(decoded, safe="~")}
                | {quote(decoded), quote_plus(decoded)}
            )
    return {form for form in forms if form}


def mask_url_password(url: str) -> str:
    """``url`` with every password (user-info and query) replaced by ``***``; safe to print.

    User names stay, to help debugging. Works on any text with a scheme, even one whose
    port is not a number. Each part of a Sentinel URL is masked.
    """
    if is_sentinel_url(url):
        return ";".join(_mask_one(part) for part in sentinel_parts(url))
    return _mask_one(url)


def _mask_one(url: str) -> str:
    parts = urlsplit(url)
    if at_after_host(url):  # all before the last '@' may be a password: show none of it
        return _mask_one(f"{parts.scheme}://{MASK}@{url.rpartition('@')[2]}")
    user, password, hostport = _split_netloc(parts.netloc)
    netloc = parts.netloc
    if password is not None:
        netloc = f"{user}:{MASK}@{hostport}"
    query = "&".join(
        f"{name}={MASK}" if _is_credential(name) else (f"{name}={value}" if value else name)
        for name, value in _query_pairs(parts.query)
    )
    return _unsplit(parts._replace(netloc=netloc, query=query))


def broker_url(url: str) -> str:
    """The same Redis as kombu (Celery's transport) must be told it.

    ``unix:///path?db=N`` becomes ``redis+socket:///path?virtual_host=N``, and a password in
    the query moves into the user-info, percent-encoded (kombu ignores it in a socket URL's
    query and fails on it in a ``redis://`` one). Other query parameters are kept.
    A Sentinel URL is rebuilt with the primary's password and database in its first part,
    the only one kombu reads them from (``ValueError`` if its parts disagree).
    """
    if is_sentinel_url(url):
        return _sentinel_broker_url(url)
    parts = urlsplit(url)
    user, _, hostport = _split_netloc(parts.netloc)
    password = redis_password(url)
    query: list[tuple[str, str]] = []
    for name, value in _query_pairs(parts.query):
        key = unquote_plus(name)
        if key.lower() in CREDENTIAL_PARAMS:
            continue
        if key == "username" and not user:
            user = quote(unquote_plus(value), safe="")
            continue
        # kombu takes a socket's database from virtual_host, and ignores db.
        query.append(("virtual_host" if parts.scheme == "unix" and key == "db" else name, value))
    scheme = "redis+socket" if parts.scheme == "unix" else parts.scheme
    if password is not None:
        netloc = f"{user or ''}:{quote(password, safe='')}@{hostport}"
    else:
        netloc = f"{user}@{hostport}" if user else hostport
    rebuilt = "&".join(f"{name}={value}" if value else name for name, value in query)
    return _unsplit(parts._replace(scheme=scheme, netloc=netloc, query=rebuilt))


def _sentinel_broker_url(url: str) -> str:
    address = parse_sentinel_url(url)
    login = ""
    if address.password is not None:
        login = f"{quote(address.username or '', safe='')}:{quote(address.password, safe='')}@"
    rebuilt = []
    for index, (host, port) in enumerate(address.sentinels):
        shown = f"[{host}]" if ":" in host else host
        if index == 0:
            rebuilt.append(f"sentinel://{login}{shown}:{port}/{address.db}")
        else:
            rebuilt.append(f"sentinel://{shown}:{port}")
    return ";".join(rebuilt)


def _unsplit(parts: SplitResult) -> str:
    """Like ``urlunsplit``, but keeps the ``//`` of an empty host (``unix:///path``)."""
    url = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if parts.query:
        url += f"?{parts.query}"
    if parts.fragment:
        url += f"#{parts.fragment}"
    return url
