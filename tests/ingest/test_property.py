"""Property: whatever body the ingest endpoint accepts is delivered unchanged in meaning.

The app runs in-process (httpx's ASGITransport, the app's lifespan entered in an anyio
portal's event loop, as a server would) against real Redis.
Each accepted body's stream entry is read back and planned as a worker plans it
(``plan_fold``); the attributes the worker would send must equal the request's, with
timestamps in nanoseconds and the id filled in (the given one, or the derived one).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from config import load_settings
from forwarder import derive_deployment_id, derive_incident_id
from forwarder.protocol import KIND_DEPLOYMENT, KIND_FAILURE, state_id
from harness import streams
from tests.ingest.in_thread import AppInThread, app_in_thread
from workers.delivery.fold import plan_fold

KEY = f"ingest-key-{uuid.uuid4().hex}"
NS = 10**9
# Examples are a POST and three Redis round trips: bounded in number, and no per-example
# deadline, since wall-clock time on a loaded 2-core machine says nothing about correctness.
EXAMPLES = settings(max_examples=60, deadline=None)

# --- what a producer may send ----------------------------------------------------------------

# Any Unicode a JSON body can carry in UTF-8 (no lone surrogates), tag-safe variants below.
text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=24)
event_ids = st.from_regex(r"[A-Za-z0-9._:-]{16,64}", fullmatch=True)
commit_shas = st.from_regex(r"[a-fA-F0-9]{40,64}", fullmatch=True)
tag_keys = st.builds(
    str.__add__,
    st.characters(categories=["L", "N"]),
    st.text(st.characters(codec="utf-8", exclude_characters=":\n"), max_size=10),
)
tag_values = st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=10)
custom_tags = st.lists(st.builds("{}:{}".format, tag_keys, tag_values), max_size=5)
gits = st.fixed_dictionaries({"repository_url": text, "commit_sha": commit_shas})
# 2000-01-01 to 2100-01-01, in nanoseconds.
instants_ns = st.integers(min_value=946_684_800 * NS, max_value=4_102_444_800 * NS)


@st.composite
def timestamps(draw: st.DrawFn, at_least_ns: int = 0) -> tuple[int, int]:
    """``(value sent, nanoseconds the worker must send)``: seconds, milliseconds or ns."""
    instant = draw(instants_ns.filter(lambda ns: ns >= at_least_ns))
    per_unit = draw(st.sampled_from([NS, 10**6, 1]))
    sent = instant // per_unit
    expected = sent * per_unit
    if expected < at_least_ns:  # truncating to the unit went before the lower bound
        sent, expected = sent + 1, (sent + 1) * per_unit
    return sent, expected


def _optional(draw: st.DrawFn, strategy: st.SearchStrategy[Any]) -> Any:
    return draw(st.one_of(st.none(), strategy))


@st.composite
def failures(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid failure body's attributes, and the attributes the worker must send for it."""
    started, started_ns = draw(timestamps())
    owner = draw(st.sampled_from(["services", "team", "both"]))
    sent: dict[str, Any] = {
        "id": _optional(draw, event_ids),
        "started_at": started,
        "services": draw(st.lists(text, min_size=1, max_size=4)) if owner != "team" else None,
        "team": draw(text) if owner != "services" else None,
        "name": _optional(draw, text),
        "severity": _optional(draw, text),
        "env": _optional(draw, text),
        "version": _optional(draw, text),
        "git": _optional(draw, gits),
        "custom_tags": _optional(draw, custom_tags),
    }
    expected = {**sent, "started_at": started_ns}
    if draw(st.booleans()):
        sent["finished_at"], expected["finished_at"] = draw(timestamps(at_least_ns=started_ns))
    sent = {k: v for k, v in sent.items() if v is not None}
    expected = {k: v for k, v in expected.items() if v is not None}
    expected.setdefault(
        "id",
        derive_incident_id(
            started_at_ns=started_ns,
            env=sent.get("env"),
            services=sent.get("services"),
            team=sent.get("team"),
        ),
    )
    return sent, expected


@st.composite
def deployments(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid deployment body's attributes, and the attributes the worker must send."""
    started, started_ns = draw(timestamps())
    finished, finished_ns = draw(timestamps(at_least_ns=started_ns))
    sent: dict[str, Any] = {
        "id": _optional(draw, event_ids),
        "service": draw(text),
        "started_at": started,
        "finished_at": finished,
        "env": _optional(draw, text),
        "team": _optional(draw, text),
        "version": _optional(draw, text),
        "git": _optional(draw, gits),
        "custom_tags": _optional(draw, custom_tags),
    }
    sent = {k: v for k, v in sent.items() if v is not None}
    expected = {**sent, "started_at": started_ns, "finished_at": finished_ns}
    expected.setdefault(
        "id",
        derive_deployment_id(
            started_at_ns=started_ns, env=sent.get("env"), service=sent["service"]
        ),
    )
    return sent, expected


# --- the endpoint in-process ---------------------------------------------------------------


@dataclass(frozen=True)
class Harness(AppInThread):
    """The app in-process, and what a worker would make of the stream afterwards."""

    def accepted(self, path: str, attributes: dict[str, Any]) -> str:
        """POST the attributes in Datadog's envelope; assert a 202; return the answered id."""
        self.redis.delete(self.stream)
        body = json.dumps({"data": {"attributes": attributes}}, ensure_ascii=False)
        post = partial(self.client.post, path, content=body.encode(), headers={"DD-API-KEY": KEY})
        response = self.portal.call(post)
        assert response.status_code == 202, response.text
        return str(response.json()["data"]["id"])

    def as_a_worker_sends_it(self) -> tuple[str, dict[str, Any]]:
        """The one update folding the stream makes: its state id, and its attributes."""
        plan = plan_fold(streams.entries(self.redis, self.stream))
        assert plan.poison == ()
        (update,) = plan.updates
        return update.incident_id, {f.field: json.loads(f.value) for f in update.fields}


@pytest.fixture(scope="module")
def harness(redis_url: str) -> Iterator[Harness]:
    prefix = f"test-ingest-prop-{uuid.uuid4().hex[:12]}"
    app_settings = load_settings(
        redis_url=redis_url, key_prefix=prefix, ingest_keys=SecretStr(KEY), dd_api_key=None
    )
    with app_in_thread(redis_url, app_settings) as running:
        yield Harness(running.portal, running.client, running.redis, running.stream)


@EXAMPLES
@given(case=failures())
def test_accepted_failure_is_delivered_unchanged_in_meaning(
    harness: Harness, case: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """Any valid failure body: the worker sends its attributes, ns timestamps, id filled in."""
    sent, expected = case
    answered = harness.accepted("/api/v2/dora/failure", sent)
    assert answered == expected["id"]
    assert harness.as_a_worker_sends_it() == (state_id(KIND_FAILURE, answered), expected)


@settings(EXAMPLES, max_examples=30)
@given(case=deployments())
def test_accepted_deployment_is_delivered_unchanged_in_meaning(
    harness: Harness, case: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """Any valid deployment body: the same, as a deployment's state."""
    sent, expected = case
    answered = harness.accepted("/api/v2/dora/deployment", sent)
    assert answered == expected["id"]
    assert harness.as_a_worker_sends_it() == (state_id(KIND_DEPLOYMENT, answered), expected)
