"""A real Prometheus Alertmanager on loopback, its one webhook receiver pointed at a test's URL.

The ingest endpoint's Alertmanager source is tested against the real sender, not against
bodies written by hand: what Alertmanager sends (payload version 4, its fingerprints, its
resolved notifications, its repeats) is then what Alertmanager does, not what we believe it
does. Debian's ``prometheus-alertmanager`` package provides the binary; CI installs it
(``.ci/run``). Where it is missing, tests skip with :data:`SKIP_REASON`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from harness.loopback_server import LoopbackServer
from harness.stack import free_port

SKIP_REASON = (
    "needs a real Alertmanager: install prometheus-alertmanager "
    "(`apt-get install -y prometheus-alertmanager`)"
)
"""Why Alertmanager tests skip on a machine without it (CI installs it, so never there)."""

RECEIVER = "ingest"


def alertmanager_binary() -> str | None:
    """Debian's ``prometheus-alertmanager``, else upstream's ``alertmanager``; None if neither."""
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def alertmanager_config(
    webhook_url: str,
    bearer_key: str,
    *,
    group_by: Iterable[str] = ("alertname",),
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
) -> dict[str, Any]:
    """One route to one webhook receiver that sends ``Authorization: Bearer <bearer_key>``.

    Durations are Alertmanager's (``"0s"``, ``"1s"``, ``"1h"``). The defaults are short for
    tests: a new group is sent at once (group_wait 0s is accepted), a change in it (a
    resolution) within a second, and an unchanged group is not sent again for an hour.
    """
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": RECEIVER,
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials": bearer_key}
                        },
                    }
                ],
            }
        ],
    }


def rfc3339(moment: datetime) -> str:
    """The timestamp format of Alertmanager's API (it refuses a naive datetime's)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AlertmanagerProcess(LoopbackServer):
    """One Alertmanager on 127.0.0.1 in its own process group, clustering off, state in
    ``workdir`` (config, storage, log), so that tests never share notification logs."""

    def __init__(
        self,
        webhook_url: str,
        bearer_key: str,
        workdir: Path,
        *,
        group_by: Iterable[str] = ("alertname",),
        group_wait: str = "0s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
    ) -> None:
        binary = alertmanager_binary()
        if binary is None:
            raise RuntimeError(SKIP_REASON)
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / "alertmanager.yml"
        config = alertmanager_config(
            webhook_url,
            bearer_key,
            group_by=group_by,
            group_wait=group_wait,
            group_interval=group_interval,
            repeat_interval=repeat_interval,
        )
        # The file holds the key: readable by this user only.
        config_path.touch(mode=0o600)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        log_path = workdir / "alertmanager.log"
        command = [
            binary,
            f"--config.file={config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # The payload's externalURL: otherwise derived from the host name (http://<host>:port).
            f"--web.external-url=http://127.0.0.1:{port}",
            # Empty: no gossip listener (the default binds 0.0.0.0:9094, which two tests would
            # share) and no wait for peers to settle before the first notification.
            "--cluster.listen-address=",
            "--log.level=debug",
        ]
        super().__init__("alertmanager", command, port, log_path)

    def post_alert(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
    ) -> None:
        """Send one alert as Prometheus does (``POST /api/v2/alerts``).

        Without ``ends_at`` Alertmanager keeps it firing for its resolve_timeout (5 min by
        default) and its notifications carry ``endsAt: 0001-01-01T00:00:00Z``.
        """
        alert: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations or {})}
        if starts_at is not None:
            alert["startsAt"] = rfc3339(starts_at)
        if ends_at is not None:
            alert["endsAt"] = rfc3339(ends_at)
        response = self._client.post("/api/v2/alerts", json=[alert])
        if response.status_code != 200:
            raise AssertionError(
                f"alertmanager refused the alert: {response.status_code} {response.text}"
            )

    def resolve(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
    ) -> datetime:
        """Post the same alert (same labels) ended at ``ends_at``, by default a moment ago;
        Alertmanager sends the resolved notification at the group's next interval."""
        ended = ends_at or datetime.now(UTC) - timedelta(milliseconds=1)
        self.post_alert(labels, annotations, starts_at, ended)
        return ended

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (``GET /api/v2/alerts``), fingerprints included."""
        response = self._client.get("/api/v2/alerts")
        response.raise_for_status()
        held: list[dict[str, Any]] = response.json()
        return held
