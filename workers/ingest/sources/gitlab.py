"""GitLab's deployment events -> deployments. Pure.

GitLab sends one webhook per status of a deployment. ``running`` gives its start and
``success`` its finish; the deployment is enqueued once its success is known, with the
start its ``running`` gave. A ``success`` whose ``running`` never came (a hook added
mid-deployment, a delivery lost) has only one time: the payload's ``status_changed_at``,
used as both start and finish. If the ``running`` arrives afterwards (GitLab does not
promise the order of its hooks), the deployment is enqueued again with the true start,
and the same id updates it. The id comes from GitLab's deployment id and the host of the
project's URL (ids are counted per GitLab instance).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from forwarder.entry import Event
from forwarder.protocol import KIND_DEPLOYMENT
from workers.ingest.sources.document import Node, cut, shown, validated
from workers.ingest.sources.ids import instance_of, source_id
from workers.ingest.sources.mapped import Ignored, Mapped
from workers.ingest.sources.mapping_file import GitLabMapping

SOURCE: Final = "gitlab"
DEPLOYMENT_HOOK: Final = "Deployment Hook"
RUNNING: Final = "running"
SUCCESS: Final = "success"
_COMMIT: Final = re.compile(r"/-/commit/(?P<sha>[0-9a-fA-F]{40,64})/?$")
_GITLAB_TIMES: Final = ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S UTC")
"""How GitLab writes times in hooks: ``2021-04-28 21:50:00 +0200`` (or ``... UTC``)."""


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    """One status of a GitLab deployment: which, when, and the deployment's other fields."""

    deployment_key: str
    status: str
    at_ns: int
    attributes: dict[str, Any]
    origin: dict[str, str]


def _instant(node: Node, name: str) -> int:
    """A GitLab time (its own format, or ISO 8601) in nanoseconds since the epoch."""
    found = node.member(name)
    if isinstance(found.value, str):
        for layout in _GITLAB_TIMES:
            try:
                parsed = datetime.strptime(found.value.strip(), layout)
            except ValueError:
                continue
            aware = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
            return Node(aware, found.pointer).as_instant()
    return found.as_instant()


def _commit_sha(root: Node) -> tuple[str, str] | None:
    """The full SHA, which GitLab gives only at the end of ``commit_url``."""
    url = root.optional_text("commit_url")
    found = _COMMIT.search(url) if url else None
    return (found["sha"], f"{root.pointer}/commit_url") if found else None


def read_status(
    event_name: str, document: Any, mapping: GitLabMapping
) -> DeploymentStatus | Mapped:
    """The status a hook of ``event_name`` (``X-Gitlab-Event``) reports, or what it ignores;
    ``UnmappableError`` when a deployment hook cannot be read."""
    if event_name != DEPLOYMENT_HOOK:
        reason = f"only {DEPLOYMENT_HOOK} events are mapped (select just deployment events)"
        return Mapped(ignored=[Ignored(f"GitLab event {shown(event_name)}", reason)])
    root = Node(document).object()
    deployment_id = root.identifier("deployment_id")
    status = root.text("status")
    if status not in {RUNNING, SUCCESS}:
        what = f"GitLab deployment {cut(deployment_id)} status {shown(status)}"
        reason = f"only {RUNNING} (its start) and {SUCCESS} (its finish) make a deployment"
        return Mapped(ignored=[Ignored(what, reason)])
    project = root.member("project").object()
    web_url = project.optional_text("web_url")
    attributes: dict[str, Any] = {
        "id": source_id(SOURCE, "deployment", instance_of(web_url), deployment_id),
        "service": project.text(mapping.service_from),
    }
    origin = {"service": f"{project.pointer}/{mapping.service_from}"}
    if env := root.optional_text("environment"):
        attributes["env"], origin["env"] = env, f"{root.pointer}/environment"
    if (sha := _commit_sha(root)) and web_url:
        attributes["git"] = {"repository_url": web_url, "commit_sha": sha[0]}
        origin["git"] = sha[1]
    if ref := root.optional_text("ref"):
        attributes["version"], origin["version"] = ref, f"{root.pointer}/ref"
    if mapping.tags:
        attributes["custom_tags"] = list(mapping.tags)
    at_ns = _instant(root, "status_changed_at")
    return DeploymentStatus(str(attributes["id"]), status, at_ns, attributes, origin)


def deployment(status: DeploymentStatus, running_ns: int | None, success_ns: int) -> Event:
    """The deployment once its success is known: from its running (when known) to its success.

    A start later than the finish (clocks, or a re-run) is clamped to the finish.
    """
    started = success_ns if running_ns is None else min(running_ns, success_ns)
    attributes = {**status.attributes, "started_at": started, "finished_at": success_ns}
    origin = {**status.origin, "started_at": "/status_changed_at"}
    return validated(attributes, KIND_DEPLOYMENT, origin)
