"""Static checks of the deployment files: Dockerfile, .dockerignore and docker-compose.yml.

Docker is not available where the tests run, so these read the files and assert what a
deployment relies on (durable Redis, the Celery entry points, the required API key, non-root).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def _argv(command: str | list[str]) -> list[str]:
    """A compose ``command`` as an argument list, whichever form it was written in."""
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a mapping, whichever form it was written in."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            instruction, _, args = full.partition(" ")
            result.append((instruction.upper(), args.strip()))
    return result


def _final_stage() -> list[tuple[str, str]]:
    """The instructions of the last build stage, from its FROM on."""
    instructions = _instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def test_compose_defines_redis_worker_and_beat(compose: dict[str, Any]) -> None:
    """The compose file defines the redis, worker and beat services and no obsolete version key."""
    assert {"redis", "worker", "beat"} <= set(compose["services"])
    assert "version" not in compose


def test_redis_is_durable_and_never_evicts(services: dict[str, Any]) -> None:
    """Redis runs with the append-only file on and the noeviction memory policy."""
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(_argv(redis["command"]))
    assert command.startswith("redis-server ")
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_redis_has_healthcheck_and_data_volume(compose: dict[str, Any]) -> None:
    """Redis is health-checked with redis-cli ping and keeps /data on a named volume."""
    redis = compose["services"]["redis"]
    assert "redis-cli ping" in " ".join(_argv(redis["healthcheck"]["test"]))
    mounts = [
        v.split(":") if isinstance(v, str) else [v["source"], v["target"]] for v in redis["volumes"]
    ]
    data_volumes = [source for source, target, *_ in mounts if target == "/data"]
    assert data_volumes, "no volume mounted on /data"
    named_volumes = compose.get("volumes") or {}
    assert data_volumes[0] in named_volumes, "the /data volume is not a named volume"


def test_redis_is_not_published_on_all_interfaces(services: dict[str, Any]) -> None:
    """Redis is not reachable from outside the host: no port, or one bound to 127.0.0.1."""
    for port in services["redis"].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"redis published beyond loopback: {port}"


def test_worker_runs_celery_worker(services: dict[str, Any]) -> None:
    """The worker service runs `celery -A workers worker` and allows a 30 s warm shutdown."""
    worker = services["worker"]
    assert _argv(worker["command"])[:4] == ["celery", "-A", "workers", "worker"]
    assert worker["stop_grace_period"] == "30s"
    assert worker["restart"] == "unless-stopped"


def test_beat_runs_celery_beat_once(services: dict[str, Any]) -> None:
    """The beat service runs `celery -A workers beat` with a single replica."""
    beat = services["beat"]
    assert _argv(beat["command"])[:4] == ["celery", "-A", "workers", "beat"]
    assert beat.get("deploy", {}).get("replicas", 1) == 1


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_service_waits_for_healthy_redis(services: dict[str, Any], name: str) -> None:
    """Worker and beat start only once redis reports healthy."""
    depends_on = services[name]["depends_on"]
    assert isinstance(depends_on, dict), "depends_on must use the long form to set a condition"
    assert depends_on["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_service_uses_the_redis_service(services: dict[str, Any], name: str) -> None:
    """Worker and beat point FORWARDER_REDIS_URL at the compose `redis` service."""
    url = _environment(services[name])["FORWARDER_REDIS_URL"]
    assert url.startswith("redis://redis:6379/")


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_service_requires_the_api_key(services: dict[str, Any], name: str) -> None:
    """Compose refuses to start worker or beat without DD_API_KEY (`:?` form); DD_SITE passes."""
    env = _environment(services[name])
    assert env["DD_API_KEY"].startswith("${DD_API_KEY:?")
    assert env["DD_SITE"].startswith("${DD_SITE")


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_service_builds_the_project_image(services: dict[str, Any], name: str) -> None:
    """Worker and beat are built from the Dockerfile at the repository root."""
    build = services[name]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert context in {".", "./"}


def test_dockerfile_uses_python_312_slim() -> None:
    """The image that runs is based on python:3.12-slim."""
    name, args = _final_stage()[0]
    assert name == "FROM"
    assert args.split()[0] == "python:3.12-slim"


def test_dockerfile_installs_the_project() -> None:
    """The Dockerfile pip-installs the project from the build context without a pip cache."""
    installs = [
        shlex.split(args)
        for name, args in _instructions()
        if name == "RUN" and "pip install" in args
    ]
    assert any("." in argv and "--no-cache-dir" in argv for argv in installs), installs


def test_dockerfile_runs_as_non_root() -> None:
    """The final stage switches to a non-root USER before the command runs."""
    users = [args for name, args in _final_stage() if name == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_is_unbuffered() -> None:
    """The image sets PYTHONUNBUFFERED=1 so logs reach `docker logs` at once."""
    env_args = " ".join(args for name, args in _final_stage() if name == "ENV")
    assert "PYTHONUNBUFFERED=1" in env_args.split()


def test_dockerfile_default_command_is_dora_forwarder_worker() -> None:
    """The default CMD, in exec form, is `dora-forwarder worker`."""
    cmds = [args for name, args in _final_stage() if name == "CMD"]
    assert cmds, "no CMD in the final stage"
    assert json.loads(cmds[-1]) == ["dora-forwarder", "worker"]


def test_dockerignore_keeps_secrets_and_venv_out_but_the_readme_in() -> None:
    """The build context excludes .env, .venv and .git but keeps README.md, which pip needs."""
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git"} <= patterns
    assert not {"README.md", "*.md", "**/*.md"} & patterns
