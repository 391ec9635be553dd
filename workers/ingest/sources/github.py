"""GitHub's ``deployment_status`` webhook -> deployments. Pure.

A status ``success`` is a finished deployment: it started when the deployment was created
and finished when the status was. The service is the repository's name unless the
deployment's ``payload`` names one; ``git`` is the repository and the deployment's commit;
``version`` its ref. The id comes from GitHub's deployment id (and the host of the
repository, as ids are counted per GitHub instance), so a re-delivered webhook
(the same ``X-GitHub-Delivery``, or another status of the same deployment) folds into one
state. Other states, and every other event but ``ping``, are answered 2xx and ignored.
"""

from __future__ import annotations

from typing import Any, Final

from forwarder import jsontext
from forwarder.protocol import KIND_DEPLOYMENT
from workers.ingest.sources.document import Node, cut, shown, validated
from workers.ingest.sources.ids import instance_of, source_id
from workers.ingest.sources.mapped import Ignored, Mapped
from workers.ingest.sources.mapping_file import GitHubMapping

SOURCE: Final = "github"
DEPLOYMENT_STATUS: Final = "deployment_status"
PING: Final = "ping"
SUCCESS: Final = "success"


def _payload_service(deployment: Node, field: str) -> tuple[str, str] | None:
    """The service the deployment's ``payload`` names (an object, or JSON text of one)."""
    payload = deployment.get("payload")
    if payload is None:
        return None
    value = payload.value
    if isinstance(value, str):  # GitHub keeps a payload given as a string as a string
        try:
            value = jsontext.parse(value)
        except jsontext.JsonTextError:
            return None
    if not isinstance(value, dict):
        return None
    service = Node(value, payload.pointer).optional_text(field)
    return (service, f"{payload.pointer}/{field}") if service else None


def map_event(event_name: str, document: Any, mapping: GitHubMapping) -> Mapped:
    """The deployment a webhook of ``event_name`` (``X-GitHub-Event``) delivers, or why it is
    ignored; ``UnmappableError`` when a ``deployment_status`` cannot be read."""
    mapped = Mapped()
    if event_name == PING:
        reason = "GitHub's ping: the webhook reaches the forwarder; deployment_status is mapped"
        mapped.ignored.append(Ignored("ping", reason))
        return mapped
    if event_name != DEPLOYMENT_STATUS:
        reason = f"only {DEPLOYMENT_STATUS} events are mapped (select just that event)"
        mapped.ignored.append(Ignored(f"GitHub event {shown(event_name)}", reason))
        return mapped
    root = Node(document).object()
    status = root.member("deployment_status").object()
    deployment = root.member("deployment").object()
    repository = root.member("repository").object()
    deployment_id = deployment.identifier("id")
    state = status.text("state")
    if state != SUCCESS:
        what = f"GitHub deployment {cut(deployment_id)} status {shown(state)}"
        mapped.ignored.append(Ignored(what, "only a status success is a finished deployment"))
        return mapped
    service = _payload_service(deployment, mapping.service_payload_field)
    if service is None:
        service = repository.text("name"), f"{repository.pointer}/name"
    repository_url = repository.text("html_url")
    attributes: dict[str, Any] = {
        "id": source_id(SOURCE, "deployment", instance_of(repository_url), deployment_id),
        "service": service[0],
        "started_at": deployment.instant("created_at"),
        "finished_at": status.instant("created_at"),
        "git": {"repository_url": repository_url, "commit_sha": deployment.text("sha")},
    }
    origin = {
        "service": service[1],
        "started_at": f"{deployment.pointer}/created_at",
        "finished_at": f"{status.pointer}/created_at",
        "git": f"{deployment.pointer}/sha",
    }
    for field, node, member in (("env", deployment, "environment"), ("version", deployment, "ref")):
        if value := node.optional_text(member):
            attributes[field], origin[field] = value, f"{node.pointer}/{member}"
    if mapping.tags:
        attributes["custom_tags"] = list(mapping.tags)
    mapped.events.append(validated(attributes, KIND_DEPLOYMENT, origin))
    return mapped
