"""A real Prometheus on loopback, scraping given targets every second, and ``promtool``.

The shipped alert rules and dashboard queries are run by the real query engine against a
real worker's metrics, not read by eye: a misspelt metric, a label that does not exist or a
query that returns nothing shows up as an empty answer. Debian's ``prometheus`` package
provides both binaries; CI installs it (``.ci/run``). Where they are missing, tests skip with
:data:`SKIP_REASON`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.loopback_server import LoopbackServer
from harness.stack import free_port

SKIP_REASON = "needs a real Prometheus: install prometheus (`apt-get install -y prometheus`)"
"""Why these tests skip on a machine without it (CI installs it, so never there)."""

JOB = "dora-forwarder"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def promtool_binary() -> str | None:
    return shutil.which("promtool")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``promtool args...``; the caller checks the exit code (its output says why)."""
    binary = promtool_binary()
    if binary is None:
        raise RuntimeError(SKIP_REASON)
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


class PrometheusProcess(LoopbackServer):
    """One Prometheus on 127.0.0.1 in its own process group: scrapes ``targets``
    (``host:port``) and evaluates ``rule_files`` every second; config, data and log in
    ``workdir``."""

    def __init__(
        self, targets: Sequence[str], workdir: Path, rule_files: Sequence[Path] = ()
    ) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError(SKIP_REASON)
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            # Every second: a test sees a delivery in a query within about two seconds.
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": list(targets)}]}],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        log_path = workdir / "prometheus.log"
        command = [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        super().__init__("prometheus", command, port, log_path)

    def _api(self, path: str, **params: str) -> Any:
        response = self._client.get(f"/api/v1/{path}", params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {response.status_code} {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now (``GET /api/v1/query``)."""
        data = self._api("query", query=expr)
        if data["resultType"] != "vector":
            raise AssertionError(f"{expr}: a {data['resultType']}, not an instant vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """Every rule Prometheus loaded, with its group (``GET /api/v1/rules``)."""
        return [
            {**rule, "group": group["name"], "file": group["file"]}
            for group in self._api("rules")["groups"]
            for rule in group["rules"]
        ]
