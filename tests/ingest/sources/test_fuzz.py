"""Fuzz: whatever a source's signed delivery holds, and whatever its proof headers say, the
answer is never a 500.

Signed deliveries of arbitrary JSON (and of the published examples with members replaced
or removed) are answered 200, 202 or 400: a 400 names each error; a 2xx lists what it
accepted, and exactly that many entries are added to the stream. Arbitrary values of the
proof headers are a 401, a 403, or (the right proof among them) what the body deserves.
The app runs in-process, its lifespan entered in an anyio portal's event loop as a server
would, against real Redis on a prefix of this module's own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ingest.in_thread import AppInThread, app_in_thread
from tests.ingest.sources.support import (
    GITHUB_SECRET,
    GITLAB_HOOK,
    GITLAB_TOKEN,
    INGEST_KEY,
    PAGERDUTY_SECRET,
    SOURCES,
    hmac_hex,
    leaked,
    payload,
    proof,
    source_settings,
)

pytestmark = pytest.mark.usefixtures("clean_env")

# Each example is one POST and a few Redis round trips: bounded in number, and no deadline
# (wall-clock time on a loaded 2-core machine says nothing about correctness).
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER_FUZZ = settings(FUZZ, max_examples=100)

EXAMPLES = {
    "alertmanager": ["alertmanager_firing", "alertmanager_resolved"],
    "pagerduty": [
        "pagerduty_incident_triggered",
        "pagerduty_incident_resolved",
        "pagerduty_incident_priority_updated",
    ],
    "github": ["github_deployment_status_success", "github_deployment_status_in_progress"],
    "gitlab": ["gitlab_deployment_running", "gitlab_deployment_success"],
}
PLAUSIBLE_KEYS = [
    *("version", "alerts", "status", "labels", "annotations", "startsAt", "endsAt"),
    *("fingerprint", "service", "services", "job", "team", "env", "alertname", "summary"),
    *("event", "event_type", "data", "id", "created_at", "occurred_at", "title", "teams"),
    *("priority", "urgency", "deployment", "deployment_status", "repository", "state"),
    *("sha", "ref", "environment", "payload", "html_url", "name", "deployment_id"),
    *("status_changed_at", "project", "commit_url", "web_url", "path_with_namespace"),
]
PLAUSIBLE_TEXT = [
    *("4", "firing", "resolved", "success", "running", "canceled", "in_progress"),
    *("incident.triggered", "incident.resolved", "deployment_status", "", " ", ","),
    *("2021-04-28 21:50:00 +0200", "2021-04-28 21:50:00 UTC", "2020-02-06T00:17:58Z"),
    *("0001-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00", "2020-02-06T00:17:58", "1e400"),
    *("1700000000", "99999999999999999999999", "a1bc48475b20e73d", "P1", "high"),
    "http://gitlab.test/a/b/-/commit/279484c09fbe69ededfced8c1bb6e6d24616b468",
    "https://github.com/a/b",
]

HOSTILE_TEXT = ["\ud800", "a\udfffb", "\x00", "\u2028", "\x1b[31m", "a/b~c", "\N{PILE OF POO}"]
"""A lone surrogate (valid JSON as an escape, but no UTF-8 encoder takes it), controls, a
JSON Pointer's special characters, a character outside the BMP."""

# Any text, lone surrogates and control characters too (sent as JSON escapes: valid JSON).
any_text = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(categories=["Cs", "Cc", "Zl", "L"]), max_size=6),
    st.sampled_from(PLAUSIBLE_TEXT),
    st.sampled_from(HOSTILE_TEXT),
)
keys = st.one_of(st.sampled_from(PLAUSIBLE_KEYS), st.sampled_from(HOSTILE_TEXT), any_text)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 10**11, 10**17, 2**63, 10**19, 1_700_000_000]),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=6)
    ),
    max_leaves=30,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a member or element of ``value`` (the root excluded)."""
    if isinstance(value, dict | list):
        for name, child in value.items() if isinstance(value, dict) else enumerate(value):
            yield (*path, name)
            yield from _paths(child, (*path, name))


def _containers(value: Any) -> Iterator[Any]:
    """``value`` and every object and array within it."""
    if isinstance(value, dict | list):
        yield value
        for child in value.values() if isinstance(value, dict) else value:
            yield from _containers(child)


@st.composite
def mutated_examples(draw: st.DrawFn, source: str) -> Any:
    """A published example of ``source`` with a few members replaced by any JSON, removed,
    or added (any name, any value) to any of its objects."""
    document = payload(draw(st.sampled_from(EXAMPLES[source])))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "add":
            objects = [node for node in _containers(document) if isinstance(node, dict)]
            draw(st.sampled_from(objects))[draw(keys)] = draw(json_values)
            continue
        paths = list(_paths(document))
        if not paths:
            break
        *parents, last = draw(st.sampled_from(paths))
        parent = document
        for name in parents:
            parent = parent[name]
        if action == "remove" and isinstance(parent, dict):
            del parent[last]
        else:
            parent[last] = draw(st.one_of(any_text, json_values))
    return document


def documents(source: str) -> st.SearchStrategy[Any]:
    return st.one_of(json_values, mutated_examples(source))


# --- the app in-process -------------------------------------------------------------------


@dataclass(frozen=True)
class Harness(AppInThread):
    """The app with every source on, in an event loop of its own; the stream's length."""

    def post(self, source: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
        send = partial(self.client.post, f"/sources/{source}", content=body, headers=headers)
        response = self.portal.call(send)
        assert response.status_code != 500, response.text
        assert not leaked(response.text), response.text
        return response

    def length(self) -> int:
        return int(self.redis.xlen(self.stream))


@pytest.fixture(scope="module")
def harness(redis_url: str) -> Iterator[Harness]:
    prefix = f"test-sources-fuzz-{uuid.uuid4().hex[:12]}"
    app_settings = source_settings(redis_url, prefix)
    with app_in_thread(redis_url, app_settings) as running:
        yield Harness(running.portal, running.client, running.redis, running.stream)


def signed(source: str, body: bytes) -> list[tuple[bytes, bytes]]:
    headers = {"Content-Type": "application/json", **proof(source, body)}
    return [(name.encode(), value.encode()) for name, value in headers.items()]


def check_answer(response: httpx.Response, added: int) -> None:
    """A 400 names each error; a 2xx says what it accepted, and that is what was added."""
    answer = response.json()
    if response.status_code == 400:
        assert added == 0
        assert answer["errors"], answer
        for error in answer["errors"]:
            assert (error["status"], error["title"]) == ("400", "Bad Request")
            assert isinstance(error["detail"], str), answer
            assert error["detail"], answer
        return
    assert response.status_code in (200, 202), response.text
    assert set(answer) >= {"accepted", "ignored", "refused"}, answer
    assert added == len(answer["accepted"])
    if response.status_code == 200:
        assert not answer["accepted"], answer
        assert not answer.get("held"), answer
    else:
        assert answer["accepted"] or answer.get("held"), answer
    for item in answer["ignored"]:
        assert item["what"], answer
        assert item["reason"], answer


# --- arbitrary payloads, properly signed --------------------------------------------------


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("source", SOURCES)
def test_any_signed_json_is_200_202_or_400(harness: Harness, source: str, data: Any) -> None:
    document = data.draw(documents(source), label="document")
    body = json.dumps(document).encode()  # ASCII: a lone surrogate is sent as its escape
    before = harness.length()
    response = harness.post(source, body, signed(source, body))
    check_answer(response, harness.length() - before)


@settings(FUZZ, max_examples=50)
@given(body=st.binary(max_size=200))
@pytest.mark.parametrize("source", SOURCES)
def test_any_signed_bytes_are_200_202_or_400(harness: Harness, source: str, body: bytes) -> None:
    """Not JSON at all (or by chance JSON): answered like any other signed body."""
    before = harness.length()
    response = harness.post(source, body, signed(source, body))
    check_answer(response, harness.length() - before)


# --- arbitrary proof headers --------------------------------------------------------------

# What h11 lets through in a header's value: visible ASCII, space, tab, and obs-text.
header_bytes = st.lists(
    st.sampled_from([9, *range(0x20, 0x7F), *range(0x80, 0x100)]), max_size=80
).map(bytes)


def proof_headers(source: str, body: bytes) -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    """Values for ``source``'s proof header: any bytes, or pieces of a plausible proof,
    the right one among them at times; sometimes the header twice."""
    right = {
        "alertmanager": f"Bearer {INGEST_KEY}",
        "pagerduty": f"v1={hmac_hex(PAGERDUTY_SECRET, body)}",
        "github": f"sha256={hmac_hex(GITHUB_SECRET, body)}",
        "gitlab": GITLAB_TOKEN,
    }[source].encode()
    name = {
        "alertmanager": "Authorization",
        "pagerduty": "X-PagerDuty-Signature",
        "github": "X-Hub-Signature-256",
        "gitlab": "X-Gitlab-Token",
    }[source]
    piece = st.one_of(
        header_bytes,
        st.just(right),
        st.builds(
            bytes.__add__, st.sampled_from([b"v1=", b"sha256=", b"Bearer ", b""]), header_bytes
        ),
        st.builds(lambda cut: right[:cut], st.integers(0, len(right))),
    )
    value = st.lists(piece, min_size=1, max_size=12).map(b",".join) | piece
    return st.lists(value, min_size=1, max_size=2).map(
        lambda values: [(name.encode(), v) for v in values]
    )


@HEADER_FUZZ
@given(data=st.data())
@pytest.mark.parametrize("source", SOURCES)
def test_any_proof_header_is_401_403_or_an_answer(harness: Harness, source: str, data: Any) -> None:
    body = json.dumps(payload(EXAMPLES[source][0])).encode()
    headers = data.draw(proof_headers(source, body), label="proof")
    event = {"github": "X-GitHub-Event", "gitlab": "X-Gitlab-Event"}.get(source)
    if event is not None:
        default = b"deployment_status" if source == "github" else GITLAB_HOOK.encode()
        headers.append((event.encode(), data.draw(st.just(default) | header_bytes, label="event")))
    content_type = data.draw(st.just(b"application/json") | header_bytes, label="content type")
    headers.append((b"Content-Type", content_type))
    before = harness.length()
    response = harness.post(source, body, headers)
    if response.status_code in (401, 403, 415):
        assert harness.length() == before
        assert response.json()["errors"], response.text
    else:
        check_answer(response, harness.length() - before)


# --- every member of every example, made hostile one at a time ------------------------------


def _with(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``document`` with the member at ``path`` set to ``value``."""
    copy = json.loads(json.dumps(document))
    *parents, last = path
    parent = copy
    for name in parents:
        parent = parent[name]
    parent[last] = value
    return copy


def _renamed(document: Any, path: tuple[Any, ...], name: str) -> Any:
    """A copy of ``document`` with the member at ``path`` (of an object) renamed ``name``."""
    copy = json.loads(json.dumps(document))
    *parents, last = path
    parent = copy
    for step in parents:
        parent = parent[step]
    parent[name] = parent.pop(last)
    return copy


def hostile_variants(source: str) -> Iterator[Any]:
    """Each published example with one value (not an object or an array) replaced by
    hostile text, or one member renamed with a lone surrogate."""
    for example in EXAMPLES[source]:
        document = payload(example)
        for path in _paths(document):
            value = document
            for name in path:
                value = value[name]
            if not isinstance(value, dict | list):
                for text in ("\ud800", "\x1b[2J\n"):
                    yield _with(document, path, text)
            if isinstance(path[-1], str):
                yield _renamed(document, path, "\ud800")


@pytest.mark.parametrize("source", SOURCES)
def test_a_hostile_string_anywhere_in_an_example_is_never_a_500(
    harness: Harness, source: str
) -> None:
    """Deterministic, exhaustive over the examples: a lone surrogate or control characters
    as any one value, or a lone surrogate as any one member's name."""
    for document in hostile_variants(source):
        body = json.dumps(document).encode()
        before = harness.length()
        check_answer(harness.post(source, body, signed(source, body)), harness.length() - before)
