"""Pure policy: which requests a claimed state still owes Datadog, in the order they must go.

A state holds, per event id, what producers asked for: the POST's attributes, a PATCH's
(``patch.<attribute>``) and a DELETE (``delete``: the stream position that asked for it).
Fold has already dropped whatever is older than a DELETE. What Datadog accepted last of each
is in the state too (``done:*``: a digest, or the DELETE's position), so the requests owed
are those whose content differs from it, in this order:

1. the DELETE, if one was asked for and not yet settled: whatever follows it in the state was
   published after it, and goes again after it even if Datadog accepted the same before;
2. the POST, if its attributes changed: a PATCH never reaches Datadog before its deployment;
3. the PATCH, if its attributes changed (an unchanged one costs nothing), or if the POST goes
   again (Datadog does not say whether a POST keeps what a PATCH set).

One request per claim: the first one owed. Its settlement records it done and makes the state
due again at once if more are owed (``ApiRequest.more``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from forwarder.protocol import (
    DELETE_FIELD,
    KIND_DEPLOYMENT,
    KIND_FAILURE,
    PATCH_FIELD_PREFIX,
    STATE_DEPLOYMENT_VERSION,
    StateField,
    parse_state_id,
)

API: Final = "/api/v2/dora"
POST_PATHS: Final = {KIND_FAILURE: f"{API}/failure", KIND_DEPLOYMENT: f"{API}/deployment"}
"""Where each kind of event is POSTed: the only paths that name no id."""
PATCH_TYPE: Final = "dora_deployment_patch_request"


class Step(StrEnum):
    """The kinds of request a state can owe, and the ``done:*`` field each one records."""

    DELETE = "delete"
    POST = "post"
    PATCH = "patch"

    @property
    def done_field(self) -> StateField:
        """The state field that records what Datadog accepted of this step."""
        return _DONE_FIELDS[self]


_DONE_FIELDS: Final = {
    Step.DELETE: StateField.DONE_DELETE,
    Step.POST: StateField.DONE_POST,
    Step.PATCH: StateField.DONE_PATCH,
}


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One request to Datadog's DORA API, and what its success records in the state."""

    step: Step
    method: str
    path: str
    body: Mapping[str, Any] | None
    """The JSON body (None: a DELETE has none)."""
    done: str
    """What ``done:<step>`` holds once Datadog accepted it: a digest, or the DELETE's position."""
    more: bool = False
    """Other requests are owed after this one: the state is due again at once."""

    @property
    def needs_app_key(self) -> bool:
        """PATCH and DELETE need Datadog's application key besides the API key."""
        return self.step is not Step.POST

    @property
    def content(self) -> bytes:
        """The body as sent."""
        if self.body is None:
            return b""
        return json.dumps(self.body, separators=(",", ":")).encode()


def state_digest(attributes: Mapping[str, Any]) -> str:
    """A short fingerprint of attributes: equal attributes, equal digests.

    16 hex digits of SHA-1 over canonical JSON; ``done:*`` and a finish record keep the
    digest of what Datadog holds, so that equal attributes cost no request.
    """
    canonical = json.dumps(attributes, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode(), usedforsecurity=False).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class StateParts:
    """A state's attributes, split by the request each part belongs to."""

    post: dict[str, Any]
    patch: dict[str, Any]
    delete: str | None
    """The stream position of the DELETE asked for, or None."""


def split_state(attributes: Mapping[str, Any]) -> StateParts:
    """The POST's attributes, the PATCH's (without their prefix) and the DELETE mark."""
    post: dict[str, Any] = {}
    patch: dict[str, Any] = {}
    delete: str | None = None
    for name, value in attributes.items():
        if name == DELETE_FIELD:
            delete = value if isinstance(value, str) else json.dumps(value)
        elif name.startswith(PATCH_FIELD_PREFIX):
            patch[name[len(PATCH_FIELD_PREFIX) :]] = value
        else:
            post[name] = value
    return StateParts(post, patch, delete)


def _post(kind: str, attributes: dict[str, Any]) -> ApiRequest:
    return ApiRequest(
        Step.POST,
        "POST",
        # A kind with no POST (a state written by hand) is dead-lettered before sending.
        POST_PATHS.get(kind, f"{API}/{kind}"),
        {"data": {"attributes": attributes}},
        state_digest(attributes),
    )


def _delete(kind: str, event_id: str, position: str) -> ApiRequest:
    noun = "failure" if kind == KIND_FAILURE else "deployment"
    return ApiRequest(Step.DELETE, "DELETE", f"{API}/{noun}/{event_id}", None, position)


def _patch(kind: str, event_id: str, attributes: dict[str, Any]) -> ApiRequest:
    if kind == STATE_DEPLOYMENT_VERSION:
        # The preview endpoint names the deployment in the body: no id anywhere.
        body: dict[str, Any] = {"data": {"type": PATCH_TYPE, "attributes": attributes}}
        path = f"{API}/deployments"
    else:
        body = {"data": {"id": event_id, "type": PATCH_TYPE, "attributes": attributes}}
        path = f"{API}/deployments/{event_id}"
    return ApiRequest(Step.PATCH, "PATCH", path, body, state_digest(attributes))


def owed_requests(
    state_id: str, attributes: Mapping[str, Any], done: Mapping[str, str]
) -> list[ApiRequest]:
    """Every request the state owes, in order (``more`` set on all but the last).

    ``done`` maps ``done:*`` fields to what they hold; an empty one (a state whose requests
    may all have to go again) makes every part owed.
    """
    kind, event_id = parse_state_id(state_id)
    parts = split_state(attributes)
    owed: list[ApiRequest] = []
    if parts.delete is not None and done.get(StateField.DONE_DELETE) != parts.delete:
        owed.append(_delete(kind, event_id, parts.delete))
        # What Datadog accepted before this DELETE is what it removes: whatever the state
        # holds after it (published later, or folded late) goes again, equal or not.
        done = {}
    if parts.post:
        post = _post(kind, parts.post)
        if done.get(StateField.DONE_POST) != post.done:
            owed.append(post)
    if parts.patch and kind in (KIND_DEPLOYMENT, STATE_DEPLOYMENT_VERSION):
        patch = _patch(kind, event_id, parts.patch)
        # After a POST, the PATCH goes again: whether Datadog keeps a PATCH across a later
        # POST of the same deployment is not documented (settle.lua forgets done:patch).
        posting = bool(owed) and owed[-1].step is Step.POST
        if posting or done.get(StateField.DONE_PATCH) != patch.done:
            owed.append(patch)
    return [
        ApiRequest(r.step, r.method, r.path, r.body, r.done, more=i < len(owed) - 1)
        for i, r in enumerate(owed)
    ]
