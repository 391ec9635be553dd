"""The alert rules and the dashboard that ship in deploy/: checked by promtool, held to the
metrics the workers export, and run by a real Prometheus against a real worker's metrics."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from config import load_settings
from forwarder import Publisher
from harness.prometheus import (
    SKIP_REASON,
    PrometheusProcess,
    prometheus_binary,
    promtool,
    promtool_binary,
)
from harness.stack import REPO, Worker, free_port, wait_until
from harness.standin import StandinServer
from workers.ops.metrics import FleetCollector, PrometheusObserver

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts.test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dora-forwarder.json"

SEVERITIES = {"critical", "warning"}
_METRIC = re.compile(r"\bdora_forwarder_\w+")
# Grafana's own variables, as a concrete range for Prometheus' API: at a 1 s scrape, a minute
# holds many samples, so rate() has two.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1m"}

needs_promtool = pytest.mark.skipif(promtool_binary() is None, reason=SKIP_REASON)


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _dashboard_exprs() -> list[str]:
    """Every query of every panel in the dashboard, in panel order."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _concrete(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable the test cannot substitute: {expr}"
    return expr


def _exported_names(redis_url: str, prefix: str) -> set[str]:
    """The sample names a worker's /metrics can carry: every family of the observer and the
    fleet collector (read from a real Redis, else it yields redis_up alone)."""
    registry = CollectorRegistry()
    PrometheusObserver(registry)
    registry.register(FleetCollector(load_settings(redis_url=redis_url, key_prefix=prefix)))
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum"))
        else:
            names.add(family.name)
    return names


# --- promtool ------------------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_the_alert_rules() -> None:
    """`promtool check rules` finds every rule of alerts.yml valid."""
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    """`promtool test rules alerts.test.yml`: every firing and quiet case holds."""
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_accepts_the_compose_prometheus_config() -> None:
    """`promtool check config` on the compose prometheus.yml, in place: its rule_files are
    relative to it, as in the container where deploy/prometheus is /etc/prometheus."""
    result = promtool("check", "config", PROMETHEUS_CONFIG.name, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


# --- the rules and the dashboard, read -----------------------------------------------------


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert of alerts.yml has a promtool case where it fires and one where it must not,
    and alerts.test.yml loads alerts.yml and tests no alert that does not exist."""
    spec = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
    assert spec["rule_files"] == [ALERTS.name]
    cases = [case for test in spec["tests"] for case in test.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in _alert_rules()}
    assert len(names) == len(_alert_rules()), "two alerts share a name"
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_says_how_bad_what_and_what_to_do(rule: dict[str, Any]) -> None:
    """Each alert has a severity label and one-line summary, description and runbook."""
    assert rule["labels"]["severity"] in SEVERITIES
    for name in ("summary", "description", "runbook"):
        text = rule["annotations"].get(name, "")
        assert text.strip(), f"no {name}"
        assert "\n" not in text.strip(), f"{name} is more than one line"
    assert "dora-forwarder " in rule["annotations"]["runbook"], "the runbook names no command"


def test_every_metric_used_is_one_the_workers_export(redis_url: str, prefix: str) -> None:
    """Every dora_forwarder_* name in alerts.yml, alerts.test.yml and the dashboard is a
    sample name the workers serve: renaming a metric fails here."""
    exported = _exported_names(redis_url, prefix)
    used = {
        path.name: set(_METRIC.findall(path.read_text(encoding="utf-8")))
        for path in (ALERTS, ALERTS_TEST, DASHBOARD)
    }
    for name, metrics in used.items():
        assert metrics, f"{name} uses no dora_forwarder metric"
        assert metrics <= exported, f"{name} uses unknown metrics {sorted(metrics - exported)}"


# --- a real Prometheus, a real worker ------------------------------------------------------


def _finite(result: list[dict[str, Any]]) -> bool:
    """Whether a query answered at least one number (NaN and Inf draw nothing useful)."""
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.fixture
def metrics_worker(start_worker: Callable[..., Worker]) -> str:
    """A real worker with an embedded beat serving /metrics on a free loopback port: its
    ``host:port``."""
    port = free_port()
    start_worker(
        "worker", "--beat", "--concurrency=1", FORWARDER_METRICS_PORT=str(port),
        FORWARDER_METRICS_HOST="127.0.0.1",
    )  # fmt: skip
    return f"127.0.0.1:{port}"


def _publish_and_wait(
    prometheus: PrometheusProcess, redis_url: str, prefix: str, ids: range, settled: int
) -> None:
    """Publish one incident per number in ``ids``; wait until Prometheus has scraped
    ``settled`` settlements in all."""
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        publisher.publish_many(
            [
                {"id": f"incident-monitoring-{i:04d}", "started_at": 1_700_000_000, "team": "t"}
                for i in ids
            ]
        )
    wait_until(
        lambda: prometheus.query(f"sum(dora_forwarder_deliveries_total) == {settled}"),
        timeout_s=20,
        what=f"{settled} settlements scraped",
    )


def _wait_for(condition: Callable[[], bool], last: Callable[[], object], what: str) -> None:
    """``wait_until`` for 15 s, failing with what ``last`` says was seen last."""
    try:
        wait_until(condition, timeout_s=15, what=what)
    except AssertionError:
        pytest.fail(f"timed out waiting for {what}; last seen: {last()}")


@pytest.mark.integration
@pytest.mark.skipif(prometheus_binary() is None, reason=SKIP_REASON)
@pytest.mark.timeout(60)
def test_real_prometheus_answers_every_panel_and_loads_the_alerts(
    metrics_worker: str, standin: StandinServer, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """A real Prometheus scraping a real worker that met a 503 (retried) and a 400 (a dead
    letter): every dashboard query returns numbers, every alert rule loads and evaluates, the
    dead-letter alert fires and every other one stays inactive."""
    names = {rule["alert"] for rule in _alert_rules()}
    exprs = [_concrete(expr) for expr in _dashboard_exprs()]
    with PrometheusProcess([metrics_worker], tmp_path / "prometheus", [ALERTS]) as prometheus:
        # The fleet gauges at rest first, so that the dead letter below is a rise.
        wait_until(
            lambda: prometheus.query("dora_forwarder_dead_letters == 0 and on() up == 1"),
            timeout_s=20,
            what="a first scrape of the worker",
        )
        # One retried, one dead: outcomes by status get three lines. The second round makes
        # every counter and histogram rise between scrapes, so that rate() is not 0 and the
        # quantiles are numbers.
        standin.respond_next(503)
        standin.respond_next(400)
        _publish_and_wait(prometheus, redis_url, prefix, range(5), settled=6)
        _publish_and_wait(prometheus, redis_url, prefix, range(5, 10), settled=11)

        empty: list[str] = []

        def every_panel_answers() -> bool:
            empty[:] = [expr for expr in exprs if not _finite(prometheus.query(expr))]
            return not empty

        _wait_for(every_panel_answers, lambda: empty, "numbers for every dashboard query")

        expected = dict.fromkeys(names, "inactive") | {"DoraForwarderDeadLettersGrowing": "firing"}

        def states() -> dict[str, tuple[str, str]]:
            return {rule["name"]: (rule["health"], rule["state"]) for rule in prometheus.rules()}

        # health is "unknown" until a rule's first evaluation, "err" if it failed.
        _wait_for(
            lambda: states() == {name: ("ok", state) for name, state in expected.items()},
            states,
            f"alert states {expected}",
        )
        rules = prometheus.rules()
        assert {rule["file"] for rule in rules} == {str(ALERTS)}
        assert [rule.get("lastError", "") for rule in rules] == [""] * len(names)
