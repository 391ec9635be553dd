"""Static checks of the compose file's `monitoring` profile (Prometheus and Grafana) and of
the Grafana files in deploy/grafana.

Docker does not run here, so these read the files and assert what the profile relies on:
pinned official images, mounts that exist in the repository, loopback ports, a scrape target
that is the worker's service and metrics port, a provisioned data source and dashboard that
point where compose puts them, and no Grafana without a password of the user's. Grafana's
start-up guard is a shell script, so it is run for real with `sh`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from harness.stack import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dora-forwarder.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards"

MONITORING = ("prometheus", "grafana")
IMAGES = {"prometheus": "prom/prometheus:", "grafana": "grafana/grafana:"}
PORTS = {"prometheus": "9090", "grafana": "3000"}
PASSWORD_ENV = "GF_SECURITY_ADMIN_PASSWORD"  # noqa: S105 (a variable's name, not a password)
# The variable the user sets in .env, substituted with no default: empty when unset.
PASSWORD_SUBSTITUTION = re.compile(r"\$\{GRAFANA_ADMIN_PASSWORD(:-)?\}")
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# The panels a user needs, by the metric each shows.
PANEL_METRICS = (
    "dora_forwarder_deliveries_total",
    "dora_forwarder_http_request_duration_seconds_bucket",
    "dora_forwarder_publish_to_delivery_seconds_bucket",
    "dora_forwarder_backlog_entries",
    "dora_forwarder_due_incidents",
    "dora_forwarder_scheduled_incidents",
    "dora_forwarder_in_flight_incidents",
    "dora_forwarder_gate_closed_seconds",
    "dora_forwarder_breaker_open",
    "dora_forwarder_dead_letters",
    "dora_forwarder_live_workers",
)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return dict(data["services"])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _binds(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts (short syntax, from ./): container path -> repository path."""
    result = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("./"):
            result[target] = REPO / source
    return result


def _published(port: str) -> tuple[str, str]:
    parts = str(port).split(":")
    return (parts[0] if len(parts) == 3 else ""), parts[-1]


def _in_container(service: dict[str, Any], path: str) -> Path | None:
    """The repository file mounted at ``path`` inside ``service``, if any."""
    for target, source in _binds(service).items():
        inside = PurePosixPath(path)
        if inside == PurePosixPath(target) or PurePosixPath(target) in inside.parents:
            return source / inside.relative_to(target)
    return None


def test_a_plain_up_starts_only_redis_worker_and_beat(services: dict[str, Any]) -> None:
    """Only redis, worker and beat belong to no profile; Prometheus and Grafana to
    `monitoring` alone."""
    assert {name for name, s in services.items() if not s.get("profiles")} == {
        "redis",
        "worker",
        "beat",
    }
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"], name


@pytest.mark.parametrize("name", MONITORING)
def test_monitoring_runs_a_pinned_official_image(services: dict[str, Any], name: str) -> None:
    """Prometheus and Grafana run their official images at a fixed version, not `latest`."""
    image = services[name]["image"]
    assert image.startswith(IMAGES[name]), image
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", image.split(":", 1)[1]), image


@pytest.mark.parametrize("name", MONITORING)
def test_monitoring_publishes_only_on_loopback(services: dict[str, Any], name: str) -> None:
    """Prometheus (9090) and Grafana (3000) are published on 127.0.0.1 only."""
    assert [_published(p) for p in services[name]["ports"]] == [("127.0.0.1", PORTS[name])]


@pytest.mark.parametrize("name", MONITORING)
def test_monitoring_mounts_exist_and_get_no_secrets(services: dict[str, Any], name: str) -> None:
    """Every file compose mounts is in the repository, read-only; neither service gets the
    Datadog keys or the env_file."""
    service = services[name]
    binds = _binds(service)
    assert binds, f"{name} mounts nothing of the repository"
    for target, source in binds.items():
        assert source.exists(), f"{name} mounts {source}, which is not in the repository"
        assert f":{target}:ro" in " ".join(map(str, service["volumes"])), f"{target} is writable"
    env = _environment(service)
    assert not {"DD_API_KEY", "DD_APP_KEY"} & set(env)
    assert "env_file" not in service


def test_prometheus_loads_the_repository_config_and_rules(services: dict[str, Any]) -> None:
    """--config.file is deploy/prometheus/prometheus.yml as mounted, and each of its
    rule_files (relative to it) is a file mounted next to it."""
    prometheus = services["prometheus"]
    flags = dict(arg.split("=", 1) for arg in prometheus["command"] if "=" in arg)
    config_inside = flags["--config.file"]
    assert _in_container(prometheus, config_inside) == PROMETHEUS_CONFIG
    for rule_file in _yaml(PROMETHEUS_CONFIG)["rule_files"]:
        inside = PurePosixPath(config_inside).parent / rule_file
        source = _in_container(prometheus, str(inside))
        assert source is not None, f"{inside} is not mounted"
        assert source.is_file(), source
    assert flags["--storage.tsdb.path"] in " ".join(prometheus["volumes"])


def test_prometheus_scrapes_the_worker_service_on_its_metrics_port(
    services: dict[str, Any],
) -> None:
    """The scrape job discovers the `worker` service by DNS (every replica of --scale) on
    the FORWARDER_METRICS_PORT compose gives the worker."""
    worker_port = int(_environment(services["worker"])["FORWARDER_METRICS_PORT"])
    (job,) = _yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    assert "static_configs" not in job, "a static target misses the replicas of --scale"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"]
    assert "worker" in services
    assert discovery["port"] == worker_port
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_grafana_password_comes_from_env_without_default(services: dict[str, Any]) -> None:
    """Grafana's admin password is ${GRAFANA_ADMIN_PASSWORD}, with no default and no `:?`
    (which would make a plain `up` demand it)."""
    password = _environment(services["grafana"])[PASSWORD_ENV]
    assert PASSWORD_SUBSTITUTION.fullmatch(password), password


def _run_grafana_entrypoint(
    services: dict[str, Any], tmp_path: Path, password: str | None
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run Grafana's entrypoint with a stand-in /run.sh; return the result and whether
    Grafana would have started."""
    argv = services["grafana"]["entrypoint"]
    assert argv[:2] == ["sh", "-c"], argv
    assert "/run.sh" in argv[2], "the script no longer starts the image's /run.sh"
    started = tmp_path / "started"
    run_sh = tmp_path / "run.sh"
    run_sh.write_text(f"#!/bin/sh\ntouch {started}\n", encoding="utf-8")
    run_sh.chmod(0o755)
    # Compose turns $$ into $; the stand-in replaces the image's /run.sh.
    script = argv[2].replace("$$", "$").replace("/run.sh", str(run_sh))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if password is not None:
        env[PASSWORD_ENV] = password
    result = subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10, check=False
    )
    return result, started.exists()


@pytest.mark.parametrize("password", [None, "", "admin"])
def test_grafana_refuses_to_start_without_a_password(
    services: dict[str, Any], tmp_path: Path, password: str | None
) -> None:
    """Unset, empty or Grafana's well-known `admin`: the container exits non-zero, naming
    the variable, and Grafana never starts."""
    result, started = _run_grafana_entrypoint(services, tmp_path, password)
    assert result.returncode != 0
    assert not started, "grafana started without a password"
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_grafana_starts_with_a_password(services: dict[str, Any], tmp_path: Path) -> None:
    """With a password set, the entrypoint execs the image's /run.sh."""
    result, started = _run_grafana_entrypoint(services, tmp_path, "a-password-of-theirs")
    assert result.returncode == 0, result.stderr
    assert started


def test_grafana_data_source_is_the_compose_prometheus(services: dict[str, Any]) -> None:
    """The provisioned data source is the default one, of type prometheus, at the
    `prometheus` service's port; and compose mounts its folder."""
    grafana = services["grafana"]
    assert _in_container(grafana, "/etc/grafana/provisioning/datasources") == DATASOURCES
    sources = [s for path in DATASOURCES.glob("*.yml") for s in _yaml(path)["datasources"]]
    (source,) = sources
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    assert source["url"] == f"http://prometheus:{PORTS['prometheus']}"


def test_grafana_loads_the_dashboard_from_where_compose_mounts_it(
    services: dict[str, Any],
) -> None:
    """The dashboard provider reads a folder where compose mounts deploy/grafana's JSON."""
    grafana = services["grafana"]
    assert _in_container(grafana, "/etc/grafana/provisioning/dashboards") == DASHBOARD_PROVIDERS
    providers = [p for path in DASHBOARD_PROVIDERS.glob("*.yml") for p in _yaml(path)["providers"]]
    (provider,) = providers
    assert provider["type"] == "file"
    folder = provider["options"]["path"]
    mounted = {target for target, source in _binds(grafana).items() if source == DASHBOARD}
    assert mounted, "compose does not mount the dashboard"
    assert {str(PurePosixPath(target).parent) for target in mounted} == {folder}
    home = _environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in mounted


def test_dashboard_picks_its_prometheus_through_a_variable(dashboard: dict[str, Any]) -> None:
    """A `datasource` variable of Prometheus sources, used by every panel and query, so the
    JSON imports into any Grafana."""
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in dashboard["panels"]:
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_REF, panel["title"]


def test_dashboard_layout_is_sound(dashboard: dict[str, Any]) -> None:
    """Unique panel ids and query refIds, panels within Grafana's 24 columns, a fixed uid."""
    assert dashboard["uid"] == "dora-forwarder"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_shows_what_an_operator_needs(dashboard: dict[str, Any]) -> None:
    """Throughput, outcomes by status, both latency histograms as quantiles, the work in
    Redis, gate, breaker, dead letters and live workers each have a query; every query
    aggregates over workers (fleet gauges are the same from each: one line, not N)."""
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    text = "\n".join(exprs)
    for metric in PANEL_METRICS:
        assert metric in text, f"no panel shows {metric}"
    assert "sum by (outcome, status_code)" in text
    for histogram in ("http_request_duration_seconds", "publish_to_delivery_seconds"):
        assert f"histogram_quantile(0.99, sum by (le) (rate(dora_forwarder_{histogram}" in text
    for expr in exprs:
        assert re.match(r"(sum|max|min|count|histogram_quantile)\b", expr), expr
