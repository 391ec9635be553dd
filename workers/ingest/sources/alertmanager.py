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

from pydantic import TypeAdapter, ValidationError

from forwarder.protocol import KIND_FAILURE
from forwarder.rules import CustomTag
from workers.ingest.sources.document import (
    Node,
    UnmappableError,
    cut,
    name_within_limit,
    shown,
    validated,
)
from workers.ingest.sources.ids import source_id
from workers.ingest.sources.mapped import Ignored, Mapped
from workers.ingest.sources.mapping_file import AlertmanagerMapping
from workers.ingest.sources.matchers import all_match

SOURCE: Final = "alertmanager"
WEBHOOK_VERSION: Final = "4"
FIRING: Final = "firing"
RESOLVED: Final = "resolved"
ZERO_TIME: Final = "0001-01-01T00:00:00Z"
"""Go's zero time: Alertmanager's ``endsAt`` of an alert that has not ended."""


def _labels(alert: Node, member: str) -> dict[str, str]:
    """An alert's labels (or annotations): strings by name."""
    found = alert.get(member)
    if found is None:
        return {}
    labels = found.object().value
    for name, value in labels.items():
        if not isinstance(value, str):
            # The name is the payload's: cut and escaped, so that the answer and the log can
            # hold it (a lone surrogate is valid JSON text, but no UTF-8 encoder takes it).
            raise UnmappableError(f"{found.pointer}/{cut(name)}", "must be a string")
    return dict(labels)


_TAG: Final = TypeAdapter(CustomTag)


def _is_tag(text: str) -> bool:
    try:
        _TAG.validate_python(text)
    except ValidationError:
        return False
    return True


def _first(labels: Mapping[str, str], names: list[str]) -> tuple[str, str] | None:
    """The first of ``names`` the alert has with a non-blank value: (label, value)."""
    for name in names:
        value = labels.get(name, "").strip()
        if value:
            return name, value
    return None


def _resolved_at(alert: Node) -> int:
    """A resolved alert's ``endsAt``, in nanoseconds; the zero time is not an end."""
    ends = alert.member("endsAt")
    if isinstance(ends.value, str) and ends.value.strip() == ZERO_TIME:
        reason = f"is the zero time {ZERO_TIME}: a resolved alert needs the time it resolved"
        raise UnmappableError(ends.pointer, reason)
    return ends.as_instant()


def _attributes(
    labels: Mapping[str, str], annotations: Mapping[str, str], mapping: AlertmanagerMapping
) -> tuple[dict[str, Any], dict[str, str]]:
    """The incident fields the labels give, and where in the alert each came from."""
    attributes: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if found := _first(labels, mapping.services_labels):
        services = [part.strip() for part in found[1].split(",") if part.strip()]
        attributes["services"], origin["services"] = services, f"labels/{found[0]}"
    for field, names in (
        ("team", mapping.team_labels),
        ("env", mapping.env_labels),
        ("severity", mapping.severity_labels),
    ):
        if found := _first(labels, names):
            attributes[field], origin[field] = found[1], f"labels/{found[0]}"
    name = labels.get(mapping.name_label, "").strip()
    summary = annotations.get(mapping.name_annotation, "").strip()
    if name or summary:
        attributes["name"] = name_within_limit(
            f"{name}: {summary}" if name and summary else name or summary
        )
        # A name the events refuse (a lone surrogate) is the summary's doing more often.
        origin["name"] = (
            f"annotations/{mapping.name_annotation}" if summary else f"labels/{mapping.name_label}"
        )
    tags = [f"{label}:{labels[label]}" for label in mapping.tag_labels if labels.get(label)]
    # A label that makes no tag (a value past 200 characters, a newline in it) is left out
    # of the tags rather than costing the incident.
    tags = [tag for tag in tags if _is_tag(tag)]
    if tags or mapping.tags:
        attributes["custom_tags"] = [*mapping.tags, *tags]
        origin["custom_tags"] = "labels"  # static tags were checked when the file was read
    return attributes, origin


def _alert(alert: Node, mapping: AlertmanagerMapping, mapped: Mapped) -> None:
    """Map one alert into ``mapped``: an incident, or an ignored item; else raise."""
    alert.object()
    labels = _labels(alert, "labels")
    annotations = _labels(alert, "annotations")
    fingerprint = alert.text("fingerprint")
    what = f"alert {cut(fingerprint)} ({cut(labels.get(mapping.name_label, 'no alertname'))})"
    status = alert.text("status")
    if status not in {FIRING, RESOLVED}:
        reason = f"status {shown(status)} is neither {FIRING} nor {RESOLVED}"
        raise UnmappableError(f"{alert.pointer}/status", reason)
    if not all_match(mapping.parsed_matchers, labels):
        reason = "it does not match the matchers of [alertmanager] in FORWARDER_SOURCES_FILE"
        mapped.ignored.append(Ignored(what, reason))
        return
    attributes, found_at = _attributes(labels, annotations, mapping)
    if "services" not in attributes and "team" not in attributes:
        wanted = ", ".join([*mapping.services_labels, *mapping.team_labels])
        reason = f"it has none of the labels that name its services or team ({wanted})"
        mapped.ignored.append(Ignored(what, reason))
        return
    origin = {field: f"{alert.pointer}/{where}" for field, where in found_at.items()}
    origin["finished_at"] = f"{alert.pointer}/endsAt"
    started_at = alert.instant("startsAt")
    attributes["started_at"] = started_at
    if status == RESOLVED:
        attributes["finished_at"] = _resolved_at(alert)
    attributes["id"] = source_id(SOURCE, fingerprint, str(started_at))
    mapped.events.append(validated(attributes, KIND_FAILURE, origin))


def _truncated(root: Node) -> Ignored | None:
    """The alerts Alertmanager left out (``max_alerts`` of the webhook config): never sent,
    so never incidents; said in the answer and the log, where they are not silently lost."""
    found = root.get("truncatedAlerts")
    count = found.value if found is not None else 0
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        return None
    what = f"{count} alert{'s' if count != 1 else ''} Alertmanager left out of this notification"
    reason = (
        "max_alerts of the receiver's webhook_config cut the group; those alerts are never "
        "sent, so they are no incidents: leave max_alerts unset (0) for this receiver"
    )
    return Ignored(what, reason, loud=True)


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
    if truncated := _truncated(root):
        mapped.ignored.append(truncated)
    for alert in root.member("alerts").items():
        try:
            _alert(alert, mapping, mapped)
        except UnmappableError as exc:
            mapped.refused.append(exc.error)
    return mapped
