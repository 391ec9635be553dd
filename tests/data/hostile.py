"""One corpus of hostile input, for every producer path: Python API, CLI, raw XADD, HTTP.

Each case is something a producer could send that must be refused with a named reason and
never with any other exception; ``says`` is a fragment of the reason every path gives.

- ``DOCUMENTS``: the bytes of one event's attributes, on one line: a ``publish`` line, the
  ``event`` field of a raw ``XADD``, and (inside ``{"data": {"attributes": ...}}``) the
  body of a request to ``serve``. Each is under 1 MiB (the endpoint's default limit).
- ``OBJECTS``: Python values handed to ``Publisher.publish`` / ``publish_many``.
- ``ENTRIES``: whole stream entries (raw names and values) that only ``XADD`` can make.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

DEEP: Final = 100_000
"""Levels of nesting of the deep cases: far past any parser's recursion limit."""

BASE: Final = b'{"id":"hostile-incident-0001","started_at":1700000000,"team":"t"'
GOOD_ATTRIBUTES: Final[dict[str, Any]] = {
    "id": "hostile-incident-0001",
    "started_at": 1_700_000_000,
    "team": "t",
}


@dataclass(frozen=True, slots=True)
class Hostile:
    """One hostile input and a fragment of the reason it must be refused with."""

    name: str
    data: Any
    says: str

    def __repr__(self) -> str:  # pytest ids and failure reports: never megabytes
        return f"Hostile({self.name})"


def _with(member: bytes) -> bytes:
    """A good incident's attributes with one more member (raw JSON bytes)."""
    return BASE + b"," + member + b"}"


def _deep_list(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def _deep_dict(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels):
        value = {"data": value}
    return value


class _Unprintable:
    """A dict key whose str() and repr() raise, as hostile as a Python object gets."""

    def __hash__(self) -> int:
        return 1

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


NOT_UTF8: Final = "not UTF-8 text"
TOO_DEEP: Final = "nested too deeply"
OUT_OF_RANGE: Final = "out of range"
SURROGATE: Final = "lone surrogate"
NOT_OBJECT: Final = "must be a JSON object"
NOT_A_FIELD: Final = "is not a field Datadog accepts"

DOCUMENTS: Final = (
    Hostile("non_utf8_value", _with(b'"name":"\xff\xfe"'), NOT_UTF8),
    Hostile("non_utf8_key", _with(b'"\xff":1'), NOT_UTF8),
    Hostile("overlong_utf8", _with(b'"name":"\xc0\xaf"'), NOT_UTF8),
    Hostile("utf8_encoded_surrogate", _with(b'"name":"\xed\xa0\x80"'), NOT_UTF8),
    Hostile("truncated_utf8", _with(b'"name":"\xe2\x82"'), NOT_UTF8),
    Hostile("latin1_text", _with('"name":"café"'.encode("latin-1")), NOT_UTF8),
    Hostile("deep_array", b"[" * DEEP + b"]" * DEEP, TOO_DEEP),
    Hostile("deep_unclosed_array", b"[" * DEEP, TOO_DEEP),
    Hostile(
        "deep_object_in_a_field", _with(b'"name":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP), TOO_DEEP
    ),
    Hostile("number_1e400", _with(b'"finished_at":1e400'), OUT_OF_RANGE),
    Hostile("number_minus_1e400", _with(b'"finished_at":-1e400'), OUT_OF_RANGE),
    Hostile("integer_of_5001_digits", _with(b'"finished_at":1' + b"0" * 5000), OUT_OF_RANGE),
    Hostile("nan", _with(b'"finished_at":NaN'), "NaN is not a JSON number"),
    Hostile("infinity", _with(b'"finished_at":Infinity'), "Infinity is not a JSON number"),
    Hostile("minus_infinity", _with(b'"finished_at":-Infinity'), "-Infinity is not a JSON number"),
    Hostile("raw_nul_in_a_string", _with(b'"name":"a\x00b"'), "Invalid control character"),
    Hostile("raw_nul_before", b"\x00" + _with(b'"name":"n"'), "Expecting value"),
    Hostile(
        "escaped_nul_in_id",
        b'{"id":"hostile\\u0000incident","started_at":1700000000,"team":"t"}',
        "id: must be 16-128 characters",
    ),
    Hostile("lone_surrogate_value", _with(b'"name":"\\ud800"'), SURROGATE),
    Hostile("lone_surrogate_key", _with(b'"\\udc00":1'), SURROGATE),
    Hostile("lone_surrogate_tag", _with(b'"custom_tags":["k:\\ud800"]'), SURROGATE),
    Hostile(
        "lone_surrogate_service",
        BASE.replace(b'"team":"t"', b'"services":["\\udfff"]') + b"}",
        SURROGATE,
    ),
    Hostile("huge_string", _with(b'"name":"' + b"x" * 500_000 + b'"'), "at most 1000 characters"),
    Hostile("huge_field_name", _with(b'"' + b"k" * 100_000 + b'":1'), NOT_A_FIELD),
    Hostile("terminal_escape_in_field_name", _with(b'"\\u001b[2J\\u001b[31mred":1'), NOT_A_FIELD),
    Hostile("array", b"[1,2]", NOT_OBJECT),
    Hostile("string", b'"text"', NOT_OBJECT),
    Hostile("number", b"42", NOT_OBJECT),
    Hostile("null", b"null", NOT_OBJECT),
    Hostile("true", b"true", NOT_OBJECT),
    Hostile("trailing_garbage", _with(b'"name":"n"') + b" x", "not valid JSON"),
    Hostile("invalid_escape", _with(b'"name":"\\x41"'), "Invalid \\escape"),
    Hostile("single_quotes", b"{'id': 'hostile-incident-0001'}", "Expecting property name"),
    Hostile(
        "timestamp_in_a_list", BASE.replace(b":1700000000", b":[1700000000]") + b"}", "started_at:"
    ),
    Hostile("timestamp_negative", BASE.replace(b":1700000000", b":-1") + b"}", "positive"),
    Hostile(
        "timestamp_of_20_digits",
        BASE.replace(b":1700000000", b":99999999999999999999") + b"}",
        "too large",
    ),
    Hostile(
        "timestamp_string_of_5000_digits",
        BASE.replace(b":1700000000", b':"' + b"9" * 5000 + b'"') + b"}",
        "too large",
    ),
    Hostile(
        "timestamp_superscript_digits",
        BASE.replace(b":1700000000", ':"²"'.encode()) + b"}",
        "ISO-8601",
    ),
    Hostile("timestamp_boolean", BASE.replace(b":1700000000", b":true") + b"}", "boolean"),
    Hostile(
        "services_nested_lists",
        BASE.replace(b'"team":"t"', b'"services":[[["a"]]]') + b"}",
        "services[0]",
    ),
    Hostile("tags_not_a_list", _with(b'"custom_tags":"k:v"'), "custom_tags"),
    Hostile(
        "ten_thousand_tags",
        _with(b'"custom_tags":' + json.dumps(["k:v"] * 10_000).encode()),
        "custom_tags",
    ),
)

OBJECTS: Final = (
    Hostile(
        "deep_list_as_a_value",
        {**GOOD_ATTRIBUTES, "team": _deep_list(DEEP)},
        "team: Input should be a valid string",
    ),
    Hostile(
        "deep_list_as_tags", {**GOOD_ATTRIBUTES, "custom_tags": _deep_list(DEEP)}, "custom_tags[0]"
    ),
    Hostile("deep_dict_as_the_event", _deep_dict(DEEP), "data: " + NOT_A_FIELD),
    Hostile("integer_of_5001_digits", {**GOOD_ATTRIBUTES, "started_at": 10**5000}, "too large"),
    Hostile("digit_string_of_5000", {**GOOD_ATTRIBUTES, "started_at": "9" * 5000}, "too large"),
    Hostile("nan_timestamp", {**GOOD_ATTRIBUTES, "started_at": float("nan")}, "started_at:"),
    Hostile("infinite_timestamp", {**GOOD_ATTRIBUTES, "finished_at": float("inf")}, "finished_at:"),
    Hostile(
        "nan_as_text",
        {**GOOD_ATTRIBUTES, "name": float("nan")},
        "name: Input should be a valid string",
    ),
    Hostile("integer_key", {**GOOD_ATTRIBUTES, 1: "x"}, "Keys should be strings"),
    Hostile("tuple_key", {**GOOD_ATTRIBUTES, (1, 2): "x"}, "Keys should be strings"),
    Hostile("none_key", {**GOOD_ATTRIBUTES, None: "x"}, "Keys should be strings"),
    Hostile("bytes_key", {**GOOD_ATTRIBUTES, b"\xff": "x"}, "Keys should be strings"),
    Hostile("nan_key", {**GOOD_ATTRIBUTES, float("nan"): "x"}, "Keys should be strings"),
    Hostile("unprintable_key", {**GOOD_ATTRIBUTES, _Unprintable(): "x"}, "Keys should be strings"),
    Hostile("lone_surrogate_name", {**GOOD_ATTRIBUTES, "name": "a\ud800"}, SURROGATE),
    Hostile("lone_surrogate_team", {**GOOD_ATTRIBUTES, "team": "\udfff"}, SURROGATE),
    Hostile("lone_surrogate_tag", {**GOOD_ATTRIBUTES, "custom_tags": ["k:\ud800"]}, SURROGATE),
    Hostile("lone_surrogate_key", {**GOOD_ATTRIBUTES, "\udc00": 1}, SURROGATE),
    Hostile("lone_surrogate_id", {**GOOD_ATTRIBUTES, "id": "hostile-incident-\ud800"}, "id:"),
    Hostile(
        "lone_surrogate_repository",
        {**GOOD_ATTRIBUTES, "git": {"repository_url": "\ud800", "commit_sha": "a" * 40}},
        SURROGATE,
    ),
    Hostile("bytes_value", {**GOOD_ATTRIBUTES, "team": b"\xff"}, "team:"),
    Hostile(
        "nul_in_id",
        {**GOOD_ATTRIBUTES, "id": "hostile\x00incident-0001"},
        "id: must be 16-128 characters",
    ),
    Hostile(
        "huge_string", {**GOOD_ATTRIBUTES, "team": "x" * 10_000_000}, "at most 1000 characters"
    ),
    Hostile("huge_field_name", {**GOOD_ATTRIBUTES, "k" * 1_000_000: 1}, NOT_A_FIELD),
    Hostile(
        "terminal_escape_in_field_name", {**GOOD_ATTRIBUTES, "\x1b[2J\x1b[31mred": 1}, NOT_A_FIELD
    ),
    Hostile(
        "naive_datetime", {**GOOD_ATTRIBUTES, "started_at": datetime(2023, 11, 14)}, "no timezone"
    ),
    Hostile("boolean_timestamp", {**GOOD_ATTRIBUTES, "started_at": True}, "boolean"),
    Hostile(
        "ten_thousand_tags", {**GOOD_ATTRIBUTES, "custom_tags": ["k:v"] * 10_000}, "custom_tags"
    ),
    Hostile("none", None, NOT_OBJECT),
    Hostile("integer", 42, NOT_OBJECT),
    Hostile("string", "text", NOT_OBJECT),
    Hostile("bytes", b'{"team": "t"}', NOT_OBJECT),
    Hostile("list", [GOOD_ATTRIBUTES], NOT_OBJECT),
    Hostile("set", {"a", "b"}, NOT_OBJECT),
    Hostile("object", object(), NOT_OBJECT),
)

_GOOD_EVENT: Final = json.dumps(GOOD_ATTRIBUTES).encode()

ENTRIES: Final = (
    Hostile(
        "non_utf8_field_name_for_kind",
        {b"v": b"1", b"kind\xff": b"failure", b"event": _GOOD_EVENT},
        "unknown event kind None",
    ),
    Hostile(
        "non_utf8_version",
        {b"v": b"\xff", b"kind": b"failure", b"event": _GOOD_EVENT},
        "unknown entry format version '\\xff'",
    ),
    Hostile(
        "non_utf8_kind",
        {b"v": b"1", b"kind": b"fail\xffure", b"event": _GOOD_EVENT},
        "unknown event kind",
    ),
    Hostile(
        "huge_kind",
        {b"v": b"1", b"kind": b"k" * 1_000_000, b"event": _GOOD_EVENT},
        "unknown event kind",
    ),
    Hostile(
        "no_version",
        {b"kind": b"failure", b"event": _GOOD_EVENT},
        "unknown entry format version None",
    ),
    Hostile("no_kind", {b"v": b"1", b"event": _GOOD_EVENT}, "unknown event kind None"),
    Hostile("no_event", {b"v": b"1", b"kind": b"failure"}, "no 'event' field"),
    Hostile("empty_event", {b"v": b"1", b"kind": b"failure", b"event": b""}, "Expecting value"),
    Hostile(
        "binary_event", {b"v": b"1", b"kind": b"failure", b"event": bytes(range(256)) * 4}, NOT_UTF8
    ),
    Hostile(
        "huge_event",
        {b"v": b"1", b"kind": b"failure", b"event": b"{" + b"x" * 5_000_000},
        "Expecting property name",
    ),
    Hostile(
        "many_fields",
        {b"v": b"1", b"kind": b"failure", **{b"f%d" % i: b"\xff" for i in range(20_000)}},
        "no 'event' field",
    ),
    *(
        Hostile(
            f"event_{case.name}", {b"v": b"1", b"kind": b"failure", b"event": case.data}, case.says
        )
        for case in DOCUMENTS
    ),
)
"""Entries to XADD; ``ENTRIES`` holds every document as an entry's ``event`` too."""

TOLERATED: Final = {
    b"v": b"1",
    b"kind": b"failure",
    b"event": json.dumps({**GOOD_ATTRIBUTES, "id": "hostile-tolerated-0001"}).encode(),
    b"\xff\xfe trace": b"\x00\xff",
}
"""A valid entry with one more field of binary name and value: ignored, the event delivered."""

WRONG_TYPE_ID: Final = "hostile-wrongtype-0001"
"""An incident whose state key a test sets to a string: the fold script fails on its entries."""


def wrong_type_entry() -> dict[bytes, bytes]:
    """A valid entry for ``WRONG_TYPE_ID``: poison only while its state key is not a hash."""
    event = {**GOOD_ATTRIBUTES, "id": WRONG_TYPE_ID}
    return {b"v": b"1", b"kind": b"failure", b"event": json.dumps(event).encode()}


WRONG_TYPE: Final = Hostile("fold_script_fails", wrong_type_entry(), "WRONGTYPE")
"""``wrong_type_entry()`` as a case: its letter's reason names Redis' WRONGTYPE error."""
