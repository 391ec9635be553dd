"""The systemd units of deploy/systemd: verified by systemd itself, hardened, and running what
docker-compose.yml runs, with every secret from a root-only environment file.

``systemd-analyze verify`` and ``security --offline`` read unit files without a running
systemd, so they run for real here (skipped, naming the package, where systemd is missing).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from config.settings import Settings
from tests.system.deploy_names import (
    DEPLOY,
    compose_commands,
    files_under,
    secret_variables,
    setting_default,
    settings_variables,
)
from workers.cli.serve import GRACEFUL_SHUTDOWN_S
from workers.ops.metrics import MULTIPROC_ENV

SYSTEMD = DEPLOY / "systemd"
INSTALL_BIN = "/opt/dora-forwarder/.venv/bin/"
"""Where the README installs the project; every ExecStart runs from there."""
CONFIG_DIR = "/etc/dora-forwarder/"
UNITS = {
    "worker": "dora-forwarder-worker.service",
    "beat": "dora-forwarder-beat.service",
    "serve": "dora-forwarder-serve.service",
}
COMPOSE_SERVICE = {"worker": "worker", "beat": "beat", "serve": "ingest"}
ENV_FILES = {
    "worker": ["env", "worker.env"],
    "beat": ["env"],
    "serve": ["env", "serve.env"],
}
"""Which files each unit reads: the Datadog keys only the worker, ingest secrets only serve."""
CONTAINER_BINDING = ["--host", "0.0.0.0", "--port", "9642"]
"""compose's `ingest` flags that only make sense in a container (serve takes them from env)."""
MAX_EXPOSURE = 2.0
"""`systemd-analyze security` scale 0 (locked down) to 10 (unprotected); the units score 1.1.
What is left is what a forwarder needs: the network (to Redis and Datadog) and the host's
root file system (read-only) for its venv."""

HARDENING = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictSUIDSGID": "yes",
    "UMask": "0077",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
    "KillMode": "mixed",
}


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {directive: [values, in order]}} (directives may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}: keep each directive on one line"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _service(name: str) -> dict[str, list[str]]:
    return _unit(SYSTEMD / UNITS[name])["Service"]


def _runnable_copy(name: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at executables that exist.

    systemd 252's ``verify`` refuses a unit whose ExecStart binary is missing ("Command ...
    is not executable"), and the install path does not exist on a test machine. ``--root``
    would need the binary under that root too, so the unit is copied with the path rewritten
    to a directory of symlinks to /bin/true, named as the real programs.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for program in ("celery", "dora-forwarder"):
        link = bin_dir / program
        if not link.exists():
            link.symlink_to("/bin/true")
    text = (SYSTEMD / UNITS[name]).read_text(encoding="utf-8")
    copy = tmp_path / UNITS[name]
    copy.write_text(text.replace(INSTALL_BIN, f"{bin_dir}/"), encoding="utf-8")
    return copy


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not found: install the Debian package systemd")
    return path


def test_every_file_is_known() -> None:
    """deploy/systemd holds the three units and their example environment files, no more."""
    examples = {f"{name}.example" for names in ENV_FILES.values() for name in names}
    assert files_under(SYSTEMD) == set(UNITS.values()) | examples


@pytest.mark.parametrize("name", UNITS)
def test_systemd_verifies_the_unit(name: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about the unit.

    It exits 0 even when it ignores an unknown directive or a bad value, and only prints a
    line, so any output at all fails the test.
    """
    result = subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", str(_runnable_copy(name, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


@pytest.mark.parametrize("name", UNITS)
def test_exposure_is_low(name: str, tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the unit at most MAX_EXPOSURE."""
    result = subprocess.run(
        [
            _systemd_analyze(),
            "security",
            "--offline=yes",
            f"--threshold={round(MAX_EXPOSURE * 10)}",  # in tenths of the printed scale
            str(_runnable_copy(name, tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found[1]) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", UNITS)
def test_unit_is_hardened(name: str) -> None:
    """Each unit carries the same hardening, and restarts only on failure."""
    service = _service(name)
    assert {key: service.get(key, [None])[-1] for key in HARDENING} == HARDENING
    assert "@system-service" in service["SystemCallFilter"]


@pytest.mark.parametrize("name", UNITS)
def test_unit_starts_after_the_network(name: str) -> None:
    """Each unit waits for the network, is ordered after a local Redis, and starts at boot."""
    unit = _unit(SYSTEMD / UNITS[name])
    after = " ".join(unit["Unit"]["After"]).split()
    assert {"network-online.target", "redis-server.service"} <= set(after)
    assert "network-online.target" in " ".join(unit["Unit"]["Wants"]).split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("name", UNITS)
def test_unit_runs_what_compose_runs(name: str) -> None:
    """ExecStart is compose's command, run from the documented venv."""
    (exec_start,) = _service(name)["ExecStart"]
    program, *args = exec_start.split()
    compose_program, *compose_args = compose_commands()[COMPOSE_SERVICE[name]]
    assert program == INSTALL_BIN + compose_program
    if name == "serve":
        assert compose_args[-len(CONTAINER_BINDING) :] == CONTAINER_BINDING
        compose_args = compose_args[: -len(CONTAINER_BINDING)]
    assert args == compose_args


def test_worker_stops_after_its_work() -> None:
    """The worker's stop timeout outlasts a pump's budget and a request's timeout."""
    defaults = Settings.model_fields
    budget_s = float(defaults["task_budget_s"].default) + float(defaults["http_timeout_s"].default)
    assert int(_service("worker")["TimeoutStopSec"][-1]) > budget_s
    for name in UNITS:
        assert int(_service(name)["TimeoutStopSec"][-1]) > GRACEFUL_SHUTDOWN_S


def test_worker_metrics_live_in_its_runtime_directory() -> None:
    """PROMETHEUS_MULTIPROC_DIR is the worker's RuntimeDirectory, made fresh at each start."""
    service = _service("worker")
    (runtime,) = service["RuntimeDirectory"]
    assert service["Environment"] == [f"{MULTIPROC_ENV}=%t/{runtime}"]
    assert service["RuntimeDirectoryMode"] == ["0700"]


@pytest.mark.parametrize("name", UNITS)
def test_settings_come_only_from_environment_files(name: str) -> None:
    """No setting is inline, and each unit reads only the root-only files it needs."""
    service = _service(name)
    inline = {item.split("=", 1)[0] for item in service.get("Environment", [])}
    assert not inline & set(settings_variables())
    assert service["EnvironmentFile"] == [CONFIG_DIR + file for file in ENV_FILES[name]]
    assert all(not word.startswith(("DD_", "FORWARDER_")) for word in service["ExecStart"])


def _assignments(file: str) -> list[tuple[str, str, bool]]:
    """(name, value, commented out) for each VAR=value line of an example file."""
    lines = (SYSTEMD / f"{file}.example").read_text(encoding="utf-8").splitlines()
    found = (re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line) for line in lines)
    return [(each[2], each[3], each[1] is not None) for each in found if each]


@pytest.mark.parametrize("file", ["env", "worker.env", "serve.env"])
def test_example_env_file_holds_no_secret(file: str) -> None:
    """Every variable is a setting; a secret's line is empty; a shown default is the true one."""
    names = settings_variables()
    text = (SYSTEMD / f"{file}.example").read_text(encoding="utf-8")
    assert f"install -m 0600 -o root -g root {file}.example {CONFIG_DIR}{file}" in text
    for name, value, commented in _assignments(file):
        assert name in names, f"{file}.example: {name} is no setting"
        if name in secret_variables() and "@" in value:
            pytest.fail(f"{file}.example: {name} shows a password")
        if name in secret_variables() and name != "FORWARDER_REDIS_URL":
            assert value == "", f"{file}.example: {name} must be an empty placeholder"
        elif commented and value:
            assert setting_default(name, value), f"{file}.example: {name}={value} is no default"


def test_each_secret_goes_only_where_it_is_needed() -> None:
    """The Datadog keys are in worker.env alone, the ingest keys and secrets in serve.env."""
    where: dict[str, set[str]] = {}
    for file in ("env", "worker.env", "serve.env"):
        for name, _, _ in _assignments(file):
            where.setdefault(name, set()).add(file)
    assert where["DD_API_KEY"] == where["DD_APP_KEY"] == {"worker.env"}
    assert where["FORWARDER_REDIS_URL"] == {"env"}
    serve_only = secret_variables() - {"DD_API_KEY", "DD_APP_KEY", "FORWARDER_REDIS_URL"}
    assert serve_only
    assert {name: where[name] for name in serve_only} == dict.fromkeys(
        serve_only, frozenset({"serve.env"})
    )
