"""The manifests of deploy/kubernetes: valid for Kubernetes, hardened, probing what the app
serves, running what docker-compose.yml runs, with every secret from a Secret.

kubernetes-validate checks each object offline against the JSON schemas of Kubernetes'
OpenAPI that it ships, in strict mode: an unknown or misspelt field fails.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from config.settings import Settings
from tests.system.deploy_names import (
    DEPLOY,
    compose_commands,
    compose_image,
    files_under,
    secret_variables,
    settings_variables,
)
from workers.ingest.app import HEALTH_PATH

KUBERNETES = DEPLOY / "kubernetes"
MANIFESTS = ("configmap.yaml", "worker.yaml", "beat.yaml", "serve.yaml")
"""What kustomization.yaml applies; secret.example.yaml holds placeholders and stays out."""
SECRET_EXAMPLE = "secret.example.yaml"  # noqa: S105 - a file name, not a password
VERSIONS = ("1.30.0", "1.37.0")
"""The oldest minor still common on managed clusters, and the newest kubernetes-validate ships."""
COMPOSE_SERVICE = {"worker": "worker", "beat": "beat", "serve": "ingest"}
WORKER_EXTRA_ARGS = ["--concurrency", "2"]
"""Celery's default concurrency is the node's core count, not the pod's CPU limit."""
SECRETS_OF = {
    "worker": {"dora-forwarder-redis", "dora-forwarder-datadog"},
    "beat": {"dora-forwarder-redis"},
    "serve": {"dora-forwarder-redis", "dora-forwarder-ingest"},
}
"""The Datadog keys go to workers alone: beat never calls Datadog, serve faces the network."""
IDLE_MIB = {"worker": 138, "beat": 66, "serve": 44}
"""Idle PSS in MB: README "Footprint" for a worker of 2 processes; beat and serve measured."""


def _objects(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]


def _all_objects() -> list[dict[str, Any]]:
    return [obj for name in (*MANIFESTS, SECRET_EXAMPLE) for obj in _objects(name)]


def _deployment(component: str) -> dict[str, Any]:
    (found,) = (
        obj
        for obj in _objects(f"{component}.yaml")
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == f"dora-forwarder-{component}"
    )
    return found


def _container(component: str) -> dict[str, Any]:
    (container,) = _deployment(component)["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _port(container: dict[str, Any], port: str | int) -> int:
    """A probe's or a Service's port, by name or number, as the container declares it."""
    (number,) = (
        each["containerPort"]
        for each in container["ports"]
        if port in (each["name"], each["containerPort"])
    )
    assert isinstance(number, int)
    return number


def _mebibytes(quantity: str) -> float:
    found = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert found, f"write memory as Mi or Gi, not {quantity}"
    return int(found[1]) * (1024 if found[2] == "Gi" else 1)


def _cores(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_every_file_is_known() -> None:
    """deploy/kubernetes holds the manifests, the example Secrets and the kustomization."""
    assert files_under(KUBERNETES) == {*MANIFESTS, SECRET_EXAMPLE, "kustomization.yaml"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", [*MANIFESTS, SECRET_EXAMPLE])
def test_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    """Every object validates, strictly, against Kubernetes' schemas for that version."""
    for obj in _objects(name):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{name}: {obj['kind']} {where}: {exc.message}")


def test_kustomization_applies_the_manifests_but_not_the_example() -> None:
    """kustomization.yaml lists every manifest, and not the placeholder Secrets."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    # `images` and `namespace`: what `kustomize edit set image` and a namespace would add.
    assert set(kustomization) <= {
        "apiVersion",
        "kind",
        "labels",
        "resources",
        "images",
        "namespace",
    }
    assert kustomization["resources"] == list(MANIFESTS)


def test_one_beat_never_two() -> None:
    """Beat runs as one replica, and a rollout stops it before starting the next."""
    spec = _deployment("beat")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert _deployment("worker")["spec"]["replicas"] == 2


@pytest.mark.parametrize("component", COMPOSE_SERVICE)
def test_container_runs_what_compose_runs(component: str) -> None:
    """The command and image are compose's (the worker adds its concurrency)."""
    container = _container(component)
    expected = compose_commands()[COMPOSE_SERVICE[component]]
    if component == "worker":
        expected = [*expected, *WORKER_EXTRA_ARGS]
    assert container["command"] == expected
    assert "args" not in container
    assert container["image"] == compose_image()


@pytest.mark.parametrize("component", COMPOSE_SERVICE)
def test_pod_is_hardened(component: str) -> None:
    """Non-root, no privilege, no capability, read-only root with /tmp as its only write."""
    pod = _deployment(component)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    container = _container(component)
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert (mount["mountPath"], mount["name"]) == ("/tmp", volume["name"])  # noqa: S108
    assert "emptyDir" in volume


@pytest.mark.parametrize("component", COMPOSE_SERVICE)
def test_resources_fit_the_measured_footprint(component: str) -> None:
    """Requests and limits for CPU and memory; memory requested above the idle footprint."""
    resources = _container(component)["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert _cores(requests["cpu"]) <= _cores(limits["cpu"])
    assert IDLE_MIB[component] < _mebibytes(requests["memory"]) <= _mebibytes(limits["memory"])


def test_serve_memory_holds_every_body_in_flight() -> None:
    """serve's memory limit covers its idle size plus a full body on every connection."""
    defaults = Settings.model_fields
    bodies_mib = (
        int(defaults["ingest_max_connections"].default)
        * int(defaults["ingest_max_body_bytes"].default)
        / 1_048_576
    )
    limit = _mebibytes(_container("serve")["resources"]["limits"]["memory"])
    assert limit >= IDLE_MIB["serve"] + bodies_mib


def test_serve_probes_its_health_endpoint() -> None:
    """Readiness asks /health on serve's port; liveness only connects (Redis may be away)."""
    container = _container("serve")
    command = container["command"]
    port = int(command[command.index("--port") + 1])
    assert port == Settings.model_fields["ingest_port"].default
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == HEALTH_PATH
    assert _port(container, readiness["port"]) == port
    assert _port(container, container["livenessProbe"]["tcpSocket"]["port"]) == port


def test_worker_probes_its_metrics_port() -> None:
    """Both worker probes connect to the metrics port the worker is told to serve."""
    container = _container("worker")
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["FORWARDER_METRICS_HOST"] == "0.0.0.0"
    port = int(env["FORWARDER_METRICS_PORT"])
    assert port == Settings.model_fields["metrics_port"].default
    for probe in ("readinessProbe", "livenessProbe"):
        assert _port(container, container[probe]["tcpSocket"]["port"]) == port
    annotations = _deployment("worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_worker_stops_after_its_work() -> None:
    """The worker's grace period outlasts a pump's budget and a request's timeout."""
    defaults = Settings.model_fields
    budget_s = float(defaults["task_budget_s"].default) + float(defaults["http_timeout_s"].default)
    grace_s = _deployment("worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s > budget_s


@pytest.mark.parametrize("component", ["worker", "serve"])
def test_service_reaches_the_pods(component: str) -> None:
    """Each Service selects its Deployment's pods and targets a port they declare."""
    (service,) = (obj for obj in _objects(f"{component}.yaml") if obj["kind"] == "Service")
    labels = _deployment(component)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    for port in service["spec"]["ports"]:
        assert _port(_container(component), port["targetPort"]) == port["port"]


@pytest.mark.parametrize("component", COMPOSE_SERVICE)
def test_secrets_come_only_from_secrets(component: str) -> None:
    """No secret is inline; each container gets exactly the Secrets it needs."""
    container = _container(component)
    inline = {item["name"] for item in container.get("env", []) if "value" in item}
    assert not inline & secret_variables()
    refs = {each["secretRef"]["name"] for each in container["envFrom"] if "secretRef" in each}
    assert refs == SECRETS_OF[component]


def test_every_variable_is_a_setting() -> None:
    """Each variable a manifest sets (env, ConfigMap, Secret) is one the settings read."""
    names = set(settings_variables())
    used = {item["name"] for c in COMPOSE_SERVICE for item in _container(c).get("env", [])}
    for obj in _all_objects():
        used |= set(obj.get("data", {})) | set(obj.get("stringData", {}))
    assert used
    assert used <= names, used - names


def test_config_map_holds_no_secret() -> None:
    """The ConfigMap's keys are settings that are not secret."""
    (config_map,) = _objects("configmap.yaml")
    assert not set(config_map["data"]) & secret_variables()


def test_example_secrets_are_placeholders() -> None:
    """The example Secrets hold only secret variables, each an obvious placeholder."""
    values: dict[str, str] = {}
    for obj in _objects(SECRET_EXAMPLE):
        assert obj["kind"] == "Secret"
        assert "data" not in obj  # base64 would hide what the value is
        values |= obj["stringData"]
    assert set(values) <= secret_variables()
    # The ones a deployment cannot run without; a webhook secret would turn its source on.
    assert {"FORWARDER_REDIS_URL", "DD_API_KEY", "FORWARDER_INGEST_KEYS"} <= set(values)
    assert all("REPLACE_WITH_" in value for value in values.values())
    names = {obj["metadata"]["name"] for obj in _objects(SECRET_EXAMPLE)}
    assert names == set().union(*SECRETS_OF.values())
