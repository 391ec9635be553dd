"""Reading another system's JSON (document), the answer a delivery gets (mapped), and the
ids derived from a source's own ids (ids)."""

from __future__ import annotations

import pytest

from forwarder.rules import ID_PATTERN
from workers.ingest.sources.document import Node, UnmappableError, dotted, shown
from workers.ingest.sources.ids import source_id
from workers.ingest.sources.mapped import Ignored, Mapped
from workers.ingest.sources.mapping_file import PagerDutyMapping
from workers.ingest.sources.pagerduty import map_webhook

from .payloads import load


@pytest.mark.parametrize(
    ("pointer", "shown_as"),
    [
        ("", ""),
        ("/alerts/3/startsAt", "alerts[3].startsAt"),
        ("/event/data/teams/0/summary", "event.data.teams[0].summary"),
        ("/labels/a~1b~0c", "labels.a/b~c"),
    ],
)
def test_dotted_writes_a_pointer_as_a_reader_would(pointer: str, shown_as: str) -> None:
    """JSON Pointers become a.b[3].c, with RFC 6901's escapes undone."""
    assert dotted(pointer) == shown_as


def test_node_pointers_escape_member_names() -> None:
    """A member named with / or ~ is escaped in the pointer an error carries."""
    node = Node({"a/b~c": 5})
    with pytest.raises(UnmappableError) as caught:
        node.text("a/b~c")
    assert caught.value.error.pointer == "/a~1b~0c"
    assert str(caught.value) == "a/b~c: must be a string"


def test_shown_quotes_and_cuts_what_the_payload_sent() -> None:
    """A value is quoted, control characters escaped, and cut at 80 characters."""
    assert shown("in_progress") == "'in_progress'"
    assert shown("a\nb") == "'a\\\\nb'"
    assert shown(3) == "'3'"
    assert shown("x" * 200) == repr("x" * 80 + "...")


def test_source_id_is_readable_when_datadog_takes_it_and_hashed_otherwise() -> None:
    """Joined by ':' when the id rule allows; else the source and 40 hex digits, stable."""
    assert source_id("github", "deployment", "github.com", "1") == "github-deployment:github.com:1"
    short = source_id("gitlab", "1")
    assert short == source_id("gitlab", "1")
    assert short.startswith("gitlab-")
    assert len(short) == len("gitlab-") + 40
    assert source_id("a", "x", "y z") != source_id("a", "x y", "z")  # parts stay apart
    for made in (short, source_id("pagerduty", "é" * 200), source_id("x", "\udcff")):
        assert ID_PATTERN.fullmatch(made)


def test_the_answer_lists_accepted_ignored_and_refused() -> None:
    """accepted by id and kind, ignored by what and why, refused as JSON:API errors."""
    mapped = map_webhook(load("pagerduty_incident_triggered.json"), PagerDutyMapping())
    mapped.ignored.append(Ignored("ping", "just a ping"))
    mapped.refused.append(UnmappableError("/alerts/1/startsAt", "is required").error)
    assert mapped.answer() == {
        "accepted": [{"id": "pagerduty-PFQZPSY", "kind": "failure"}],
        "ignored": [{"what": "ping", "reason": "just a ping"}],
        "refused": [
            {
                "status": "400",
                "title": "Bad Request",
                "detail": "alerts[1].startsAt: is required",
                "source": {"pointer": "/alerts/1/startsAt"},
            }
        ],
    }


def test_held_items_appear_only_when_there_are_some() -> None:
    """held (a GitLab start waiting for its success) is in the answer only when not empty."""
    assert "held" not in Mapped().answer()
    held = Mapped(held=[Ignored("GitLab deployment 15", "waiting for its success")])
    assert held.answer()["held"] == [
        {"what": "GitLab deployment 15", "reason": "waiting for its success"}
    ]
