"""The ingest endpoint's pure parts: JSON:API errors, the request envelope, the keys."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import SecretStr

from forwarder import FieldError, to_event
from harness.stack import REPO
from workers.ingest.jsonapi import ApiError, bad_request, from_field_error, plain_errors, pointer_of
from workers.ingest.keys import IngestKeys, IngestKeysError, parse_keys
from workers.ingest.request import BadRequestError, parse_event

VALID = {"started_at": 1_700_000_000, "services": ["api"]}


@pytest.mark.parametrize(
    ("field", "pointer"),
    [
        ("started_at", "/data/attributes/started_at"),
        ("git.commit_sha", "/data/attributes/git/commit_sha"),
        ("git", "/data/attributes/git"),
        ("services[2]", "/data/attributes/services/2"),
        ("custom_tags[0]", "/data/attributes/custom_tags/0"),
        ("-", "/data/attributes"),
        ("a.b", "/data/attributes/a.b"),  # an unknown field with a dot is one field
        ("x/y~z", "/data/attributes/x~1y~0z"),  # RFC 6901 escapes
    ],
)
def test_pointer_of_field(field: str, pointer: str) -> None:
    """Each way FieldError names a field maps to the JSON Pointer of that value."""
    assert pointer_of(field) == pointer


def test_field_error_becomes_datadogs_error_object() -> None:
    """A field error is a 400 object with status, title, 'field: reason' and its pointer."""
    error = from_field_error(FieldError("git.commit_sha", "must be a full commit SHA"))
    assert bad_request([error]) == {
        "errors": [
            {
                "status": "400",
                "title": "Bad Request",
                "detail": "git.commit_sha: must be a full commit SHA",
                "source": {"pointer": "/data/attributes/git/commit_sha"},
            }
        ]
    }


def test_error_of_the_whole_event_says_only_the_reason() -> None:
    """The '-' field (the attributes as a whole) gives the reason alone, pointing at them."""
    assert from_field_error(FieldError("-", "must be a JSON object")) == ApiError(
        "must be a JSON object", "/data/attributes"
    )


def test_plain_errors_are_a_list_of_strings() -> None:
    """Errors other than 400 are Datadog's list of strings."""
    assert plain_errors("Forbidden") == {"errors": ["Forbidden"]}


def _errors(body: bytes) -> list[tuple[str | None, str]]:
    with pytest.raises(BadRequestError) as caught:
        parse_event(body, "failure")
    return [(e.pointer, e.detail) for e in caught.value.errors]


@pytest.mark.parametrize(
    ("body", "pointer", "detail"),
    [
        (b"{", "", "the body is not valid JSON: Expecting property name enclosed"),
        (b"", "", "the body is not valid JSON: Expecting value"),
        (b"\xff\xfe\xfa", "", "the body is not valid JSON"),
        (b'{"started_at": NaN}', "", "the body is not valid JSON: NaN is not"),
        (b"[1, 2]", "", "the body must be a JSON object"),
        (json.dumps(VALID).encode(), "/data", "data: is required"),
        (b'{"data": [1]}', "/data", "data: must be a JSON object"),
        (b'{"data": {}}', "/data/attributes", "data.attributes: is required"),
        (b'{"data": {"attributes": "x"}}', "/data/attributes", "data.attributes: must be"),
    ],
)
def test_body_that_is_not_datadogs_envelope(body: bytes, pointer: str, detail: str) -> None:
    """Not JSON, or not {"data": {"attributes": {...}}}: one error at the body or at /data."""
    ((found_pointer, found_detail),) = _errors(body)
    assert found_pointer == pointer
    assert found_detail.startswith(detail)


def test_deeply_nested_body_is_a_bad_request() -> None:
    """JSON nested past the parser's recursion limit is a 400, not a crash."""
    assert _errors(b"[" * 100_000 + b"]" * 100_000)[0][0] == ""


def test_every_bad_field_is_reported() -> None:
    """Two bad attributes: two errors, each with its own pointer."""
    attributes = {**VALID, "id": "short", "custom_tags": ["ok:1", "nocolon"]}
    body = json.dumps({"data": {"attributes": attributes}}).encode()
    assert [pointer for pointer, _ in _errors(body)] == [
        "/data/attributes/id",
        "/data/attributes/custom_tags/1",
    ]


def test_envelope_members_besides_attributes_are_ignored() -> None:
    """JSON:API's meta and a type next to attributes do not change the event."""
    body = {"data": {"type": "dora_failure", "attributes": VALID}, "meta": {"x": 1}}
    assert parse_event(json.dumps(body).encode(), "failure") == to_event(VALID)


def test_attributes_that_look_like_an_envelope_are_not_unwrapped_twice() -> None:
    """Attributes are validated as attributes, even if they hold a data member themselves."""
    inner = {"data": {"attributes": VALID}}
    body = json.dumps({"data": {"attributes": inner}}).encode()
    assert _errors(body) == [("/data/attributes/data", "data: is not a field Datadog accepts")]


# --- keys ------------------------------------------------------------------------------


def test_parse_keys_ignores_whitespace_and_empty_entries() -> None:
    """' a , b ,, ' is the two keys a and b."""
    assert parse_keys(" a , b ,, ") == ("a", "b")


def test_keys_accept_each_configured_key_and_nothing_else() -> None:
    """Every configured key is accepted; another, a prefix or an empty one is not."""
    keys = IngestKeys.from_settings(SecretStr(" first-key , second-key "), None)
    assert keys.accepts(b"first-key")
    assert keys.accepts(b"second-key")
    assert not keys.accepts(b"first")
    assert not keys.accepts(b"")
    assert not keys.accepts(b"first-key,second-key")


@pytest.mark.parametrize("configured", [None, SecretStr(""), SecretStr(" , ")])
def test_no_keys_is_refused_with_what_to_set(configured: SecretStr | None) -> None:
    """Without a key the endpoint cannot be built, and the error names the variable."""
    with pytest.raises(IngestKeysError, match="FORWARDER_INGEST_KEYS is not set"):
        IngestKeys.from_settings(configured, None)


def test_the_datadog_key_cannot_be_an_ingest_key() -> None:
    """Configuring DD_API_KEY as an ingest key is refused: producers get keys of their own."""
    with pytest.raises(IngestKeysError, match="contains DD_API_KEY"):
        IngestKeys.from_settings(SecretStr("mine,datadog-secret"), SecretStr("datadog-secret"))


def test_the_datadog_key_is_refused_and_recognised() -> None:
    """A producer presenting the Datadog key is refused, and the endpoint can say so."""
    keys = IngestKeys.from_settings(SecretStr("mine"), SecretStr("datadog-secret"))
    assert not keys.accepts(b"datadog-secret")
    assert keys.is_datadog_key(b"datadog-secret")
    assert not keys.is_datadog_key(b"mine")


def test_keys_never_show_in_their_repr() -> None:
    """repr() counts the keys and shows none of them."""
    keys = IngestKeys.from_settings(SecretStr("alpha-key,beta-key"), None)
    assert repr(keys) == "IngestKeys(<2 key(s)>)"
    assert len(keys) == 2


@pytest.mark.parametrize("module", ["forwarder", "workers.cli"])
def test_importing_does_not_load_the_server_stack(module: str) -> None:
    """Producers (forwarder) and the other commands (workers.cli) load no Starlette or uvicorn."""
    code = (
        f"import sys, {module}; "
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn'}); "
        "print(loaded); sys.exit(bool(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
