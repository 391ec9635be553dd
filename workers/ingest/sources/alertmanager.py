"""Prometheus Alertmanager's webhook (version 4) -> incidents. Pure.

Each alert of a notification is one incident: ``firing`` is its start (``startsAt``),
``resolved`` its start and finish (``endsAt``). The id comes from the alert's
``fingerprint`` (its label set) and ``startsAt``: the repeats of a firing alert and every
group notification that carries it again fold into one incident, and the same alert firing
again later (a new ``startsAt``) is a new incident. Fields come from labels (the first
label of each list that the alert has), as ``AlertmanagerMapping`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from forwarder.protocol import KIND_FAILURE
from workers.ingest.sources.document import Node, UnmappableError, shown, validated
from workers.ingest.sources.ids import source_id
from workers.ingest.sources.mapped import Ignored, Mapped
from workers.ingest.sources.mapping_file import AlertmanagerMapping
from workers.ingest.sources.matchers import all_match

SOURCE: Final = "alertmanager"
WEBHOOK_VERSION: Final = "4"
FIRING: Final = "firing"
RESOLVED: Final = "resolved"


def _labels(alert: Node, member: str) -> tuple[dict[str, str], str]:
    """An alert's labels (or annotations): strings by name, and where they are."""
    found = alert.get(member)
    if found is None:
        return {}, f"{alert.pointer}/{member}"
    labels = found.object().value
    for name, value in labels.items():
        if not isinstance(value, str):
            raise UnmappableError(f"{found.pointer}/{name}", "must be a string")
    return dict(labels), found.pointer


def _first(labels: Mapping[str, str], names: list[str]) -> tuple[str, str] | None:
    """The first of ``names`` the alert has with a non-blank value: (label, value)."""
    for name in names:
        value = labels.get(name, "").strip()
        if value:
            return name, value
    return None


def _attributes(
    labels: Mapping[str, str], annotations: Mapping[str, str], mapping: AlertmanagerMapping
) -> tuple[dict[str, Any], dict[str, str]]:
    """The incident fields the labels give, and the label each came from."""
    attributes: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if found := _first(labels, mapping.services_labels):
        services = [part.strip() for part in found[1].split(",") if part.strip()]
        attributes["services"], origin["services"] = services, found[0]
    for field, names in (
        ("team", mapping.team_labels),
        ("env", mapping.env_labels),
        ("severity", mapping.severity_labels),
    ):
        if found := _first(labels, names):
            attributes[field], origin[field] = found[1], found[0]
    name = labels.get(mapping.name_label, "").strip()
    summary = annotations.get(mapping.name_annotation, "").strip()
    if name or summary:
        attributes["name"] = f"{name}: {summary}" if name and summary else name or summary
        origin["name"] = mapping.name_label
    tags = [f"{label}:{labels[label]}" for label in mapping.tag_labels if labels.get(label)]
    if tags or mapping.tags:
        attributes["custom_tags"] = [*mapping.tags, *tags]
        origin["custom_tags"] = ",".join(mapping.tag_labels)
    return attributes, origin


def _alert(alert: Node, mapping: AlertmanagerMapping, mapped: Mapped) -> None:
    """Map one alert into ``mapped``: an incident, or an ignored item; else raise."""
    alert.object()
    labels, labels_at = _labels(alert, "labels")
    annotations, _ = _labels(alert, "annotations")
    fingerprint = alert.text("fingerprint")
    what = f"alert {fingerprint} ({labels.get(mapping.name_label, 'no alertname')})"
    status = alert.text("status")
    if status not in {FIRING, RESOLVED}:
        reason = f"status {shown(status)} is neither {FIRING} nor {RESOLVED}"
        raise UnmappableError(f"{alert.pointer}/status", reason)
    if not all_match(mapping.parsed_matchers(), labels):
        reason = "it does not match the matchers of [alertmanager] in FORWARDER_SOURCES_FILE"
        mapped.ignored.append(Ignored(what, reason))
        return
    attributes, labels_used = _attributes(labels, annotations, mapping)
    if "services" not in attributes and "team" not in attributes:
        wanted = ", ".join([*mapping.services_labels, *mapping.team_labels])
        reason = f"it has none of the labels that name its services or team ({wanted})"
        mapped.ignored.append(Ignored(what, reason))
        return
    origin = {field: f"{labels_at}/{label}" for field, label in labels_used.items()}
    origin["finished_at"] = f"{alert.pointer}/endsAt"
    started_at = alert.instant("startsAt")
    attributes["started_at"] = started_at
    if status == RESOLVED:
        attributes["finished_at"] = alert.instant("endsAt")
    attributes["id"] = source_id(SOURCE, fingerprint, str(started_at))
    mapped.events.append(validated(attributes, KIND_FAILURE, origin))


def map_notification(document: Any, mapping: AlertmanagerMapping) -> Mapped:
    """The incidents of a notification; ``UnmappableError`` when it is not one at all.

    An alert that cannot be mapped is refused on its own (its neighbours are enqueued).
    """
    root = Node(document).object()
    version = root.get("version")
    if version is None or version.value != WEBHOOK_VERSION:
        raise UnmappableError(
            "/version", f'must be "{WEBHOOK_VERSION}" (Alertmanager\'s webhook format version 4)'
        )
    mapped = Mapped()
    for alert in root.member("alerts").items():
        try:
            _alert(alert, mapping, mapped)
        except UnmappableError as exc:
            mapped.refused.append(exc.error)
    return mapped
