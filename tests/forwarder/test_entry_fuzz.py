"""Fuzz: any bytes in a stream entry, any bytes of a line or a body, any Python value.

Entry decoding raises nothing but ``InvalidEntryError``, folding raises nothing at all and
keeps a faithful, bounded payload; the other producer paths' parsers raise only their own
named errors. Hypothesis shrinks whatever breaks this to the smallest input.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder import Event, InvalidEventError, to_event
from forwarder.entry import InvalidEntryError, decode_entry
from forwarder.protocol import PAYLOAD_BASE64, PAYLOAD_UTF8
from workers.cli.publish import _parse_line
from workers.delivery.fold import plan_fold
from workers.delivery.poison import PAYLOAD_MAX_BYTES, REASON_MAX_CHARS
from workers.ingest.request import BadRequestError, parse_event

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELDS = ("id", "started_at", "finished_at", "services", "team", "name", "custom_tags", "git")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from([1_700_000_000, "2026-11-23T10:15:00Z", "incident-000000000001"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
attributes = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values)


def _dumps(value: Any) -> bytes:
    # surrogatepass: hypothesis' text includes lone surrogates, which JSON text can carry.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def spliced(draw: st.DrawFn, documents: st.SearchStrategy[bytes]) -> bytes:
    """A document with arbitrary bytes put in, or a piece of it cut out."""
    data = draw(documents)
    at = draw(st.integers(0, len(data)))
    cut = draw(st.integers(0, 8))
    return data[:at] + draw(st.binary(max_size=8)) + data[at + cut :]


documents = st.one_of(
    st.binary(max_size=300),
    json_values.map(_dumps),
    attributes.map(_dumps),
    spliced(attributes.map(_dumps)),
    st.builds(lambda n, tail: b"[" * n + tail, st.integers(0, 5_000), st.binary(max_size=4)),
)
names = st.sampled_from([b"v", b"kind", b"event", b"replay"]) | st.binary(max_size=12)
values = st.sampled_from([b"1", b"failure", b"deployment"]) | documents
entries = st.one_of(
    st.dictionaries(names, values, min_size=1, max_size=6),
    st.builds(
        lambda kind, event, extra: {b"v": b"1", b"kind": kind, b"event": event, **extra},
        st.sampled_from([b"failure", b"deployment"]),
        documents,
        st.dictionaries(names, st.binary(max_size=20), max_size=2),
    ),
)


@FUZZ
@given(entries)
def test_decoding_any_entry_raises_only_invalid_entry_error(fields: dict[bytes, bytes]) -> None:
    """Whatever the bytes, an entry decodes to an event or fails with a named reason."""
    result: Event | InvalidEntryError
    try:
        result = decode_entry(fields)
    except InvalidEntryError as exc:
        result = exc
    assert isinstance(result, Event) or str(result)


@FUZZ
@given(entries)
def test_folding_any_entry_keeps_it_faithfully(fields: dict[bytes, bytes]) -> None:
    """Folding never raises; a dead entry's payload gives back its bytes, within bounds."""
    plan = plan_fold([(b"1-0", fields)])
    assert plan.ack_ids == ("1-0",)
    if not plan.poison:
        return
    (poison,) = plan.poison
    assert poison.reason.isprintable()
    assert len(poison.reason) <= REASON_MAX_CHARS + 40
    assert poison.size_bytes == sum(len(k) + len(v) for k, v in fields.items())
    payload = json.loads(poison.payload)
    if poison.encoding == PAYLOAD_UTF8:
        kept = {k.encode(): v.encode() for k, v in payload.items()}
    else:
        assert poison.encoding == PAYLOAD_BASE64
        kept = {base64.b64decode(k): base64.b64decode(v) for k, v in payload.items()}
    assert sum(len(k) + len(v) for k, v in kept.items()) <= PAYLOAD_MAX_BYTES
    if not poison.truncated:
        assert kept == fields


@FUZZ
@given(documents)
def test_any_line_is_an_event_or_a_reason(line: bytes) -> None:
    """A ``publish`` line of any bytes gives an event or the text of why not."""
    result = _parse_line(line, "failure")
    assert isinstance(result, Event) or (isinstance(result, str) and result.isprintable())


@FUZZ
@given(documents)
def test_any_body_is_an_event_or_a_bad_request(body: bytes) -> None:
    """An ingest body of any bytes gives an event or a 400's errors."""
    result: Event | BadRequestError
    try:
        result = parse_event(b'{"data":{"attributes":' + body + b"}}", "failure")
    except BadRequestError as exc:
        result = exc
    assert isinstance(result, Event) or result.errors


python_keys = st.one_of(
    st.text(), st.integers(), st.none(), st.binary(), st.floats(), st.tuples(st.integers())
)
python_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.datetimes(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | python_keys, inner, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(
    st.one_of(
        python_values,
        st.dictionaries(st.sampled_from(FIELDS) | python_keys, python_values, max_size=6),
    )
)
def test_any_python_value_is_an_event_or_invalid_event_error(value: Any) -> None:
    """``Publisher.publish``'s validation takes any Python value: an event or a named error."""
    result: Event | InvalidEventError
    try:
        result = to_event(value)
    except InvalidEventError as exc:
        result = exc
    if isinstance(result, InvalidEventError):
        assert all(error.field and error.reason for error in result.errors)
        assert str(result).isprintable()
    else:
        result.model_dump_json()  # what publish writes: must not fail either
