"""Static checks of the deployment files: Dockerfile, .dockerignore, docker-compose.yml and
.env.example.

Docker is not available where the tests run, so these read the files and assert what a
deployment relies on (durable Redis, the Celery entry points, the required API key, non-root,
an opt-in Flower behind basic auth on loopback, metrics on the compose network, every setting
documented). Flower's start-up guard is a shell script, so it is run for real with `sh`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings
from harness.stack import REPO
from tests.system.deploy_names import settings_variables

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"
GITIGNORE = REPO / ".gitignore"
PYPROJECT = REPO / "pyproject.toml"

DEFAULT_SERVICES = ("redis", "worker", "beat")
"""What a plain `docker compose up` must start."""
CELERY_SERVICES = ("worker", "beat", "flower")
"""The services that run the project's image."""
FLOWER_PORT = "5555"

# A compose substitution: ${VAR}, ${VAR:-default}, ${VAR:?error} ... or $VAR, but not the
# escaped $$VAR, which reaches the container as a literal $VAR.
_SUBSTITUTION = re.compile(r"(?<!\$)\$(?:\{(?P<braced>[A-Za-z_]\w*)|(?P<bare>[A-Za-z_]\w*))")
_REQUIRED_SUBSTITUTION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_]\w*):?\?")
_ENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


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


def _strings(node: Any) -> Iterator[str]:
    """Every string value in a loaded YAML tree (keys are never interpolated by compose)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _substitutions(node: Any) -> set[str]:
    """The variables compose substitutes anywhere in ``node``."""
    return {
        match["braced"] or match["bare"]
        for text in _strings(node)
        for match in _SUBSTITUTION.finditer(text)
    }


def _required_substitutions(node: Any) -> set[str]:
    """The variables ``node`` demands with ``${VAR:?...}`` or ``${VAR?...}``."""
    return {
        match["name"] for text in _strings(node) for match in _REQUIRED_SUBSTITUTION.finditer(text)
    }


def _published(port: str | int | dict[str, Any]) -> tuple[str, str]:
    """A compose ``ports`` entry as (host address, container port), either syntax."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port["target"])
    parts = str(port).split(":")
    host_ip = parts[0] if len(parts) == 3 else ""
    return host_ip, parts[-1].split("/")[0]


def _env_example() -> list[tuple[str, str, bool, str]]:
    """.env.example's variables as (name, value, commented out, the line above)."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    result = []
    for index, line in enumerate(lines):
        match = _ENV_LINE.match(line.strip())
        if match:
            above = lines[index - 1].strip() if index else ""
            result.append((match["name"], match["value"], bool(match["comment"]), above))
    return result


def _flower_script(services: dict[str, Any]) -> str:
    """Flower's `sh -c` script as the container runs it (compose turns $$ into $)."""
    argv = _argv(services["flower"]["command"])
    assert argv[:2] == ["sh", "-c"], argv
    script = argv[2]
    assert not _SUBSTITUTION.search(script), "compose would substitute into flower's script"
    return script.replace("$$", "$")


def _run_flower_script(
    services: dict[str, Any], tmp_path: Path, basic_auth: str | None
) -> tuple[subprocess.CompletedProcess[str], list[str] | None]:
    """Run flower's command with a stand-in `celery`; return the result and celery's argv."""
    called = tmp_path / "celery-argv"
    fake = tmp_path / "celery"
    fake.write_text('#!/bin/sh\nprintf \'%s\\n\' "$@" > "$CELERY_ARGV"\n', encoding="utf-8")
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin", "CELERY_ARGV": str(called)}
    if basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = basic_auth
    result = subprocess.run(
        ["sh", "-c", _flower_script(services)],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    argv = called.read_text(encoding="utf-8").splitlines() if called.exists() else None
    return result, argv


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


@pytest.mark.parametrize("name", CELERY_SERVICES)
def test_service_waits_for_healthy_redis(services: dict[str, Any], name: str) -> None:
    """Worker, beat and flower start only once redis reports healthy."""
    depends_on = services[name]["depends_on"]
    assert isinstance(depends_on, dict), "depends_on must use the long form to set a condition"
    assert depends_on["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", CELERY_SERVICES)
def test_service_uses_the_redis_service(services: dict[str, Any], name: str) -> None:
    """Worker, beat and flower point FORWARDER_REDIS_URL at the compose `redis` service
    (unless .env names the sentinel profile's sentinels instead)."""
    url = _environment(services[name])["FORWARDER_REDIS_URL"]
    assert url.startswith("${DORA_COMPOSE_REDIS_URL:-redis://redis:6379/")


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_service_requires_the_api_key(services: dict[str, Any], name: str) -> None:
    """Compose refuses to start worker or beat without DD_API_KEY (`:?` form); DD_SITE passes."""
    env = _environment(services[name])
    assert env["DD_API_KEY"].startswith("${DD_API_KEY:?")
    assert env["DD_SITE"].startswith("${DD_SITE")


@pytest.mark.parametrize("name", CELERY_SERVICES)
def test_service_builds_the_project_image(services: dict[str, Any], name: str) -> None:
    """Worker, beat and flower run one image, built from the Dockerfile at the repository root."""
    build = services[name]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert context in {".", "./"}
    assert services[name]["image"] == services["worker"]["image"]


def test_dockerfile_uses_python_312_slim() -> None:
    """The image that runs is based on python:3.12-slim."""
    name, args = _final_stage()[0]
    assert name == "FROM"
    assert args.split()[0] == "python:3.12-slim"


def _pip_installs() -> list[list[str]]:
    """The argument lists of the Dockerfile's `pip install` commands."""
    return [
        shlex.split(args)
        for name, args in _instructions()
        if name == "RUN" and "pip install" in args
    ]


def _project_targets(argv: list[str]) -> list[set[str]]:
    """The extras of each `.` or `.[a,b]` (the build context) that ``argv`` installs."""
    targets = []
    for arg in argv:
        match = re.fullmatch(r"\.(?:\[(?P<extras>[\w,\s-]*)\])?", arg)
        if match:
            targets.append({e.strip() for e in (match["extras"] or "").split(",") if e.strip()})
    return targets


def test_dockerfile_installs_the_project() -> None:
    """The Dockerfile pip-installs the project from the build context without a pip cache."""
    installs = _pip_installs()
    assert any(_project_targets(argv) and "--no-cache-dir" in argv for argv in installs), installs


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


def test_default_services_have_no_profile(services: dict[str, Any]) -> None:
    """Redis, worker and beat belong to no profile, so a plain `docker compose up` starts them."""
    for name in DEFAULT_SERVICES:
        assert not services[name].get("profiles"), f"{name} is behind a profile"


def test_flower_is_only_in_the_flower_profile(services: dict[str, Any]) -> None:
    """Flower runs only with `--profile flower`, never on a plain `up`."""
    assert services["flower"]["profiles"] == ["flower"]


def test_profiles_add_no_required_variable(services: dict[str, Any]) -> None:
    """No opt-in service demands a ${VAR:?} of its own: compose checks them even on a plain `up`."""
    always = set().union(
        *(_required_substitutions(s) for s in services.values() if not s.get("profiles"))
    )
    for name, service in services.items():
        if service.get("profiles"):
            extra = _required_substitutions(service) - always
            assert not extra, f"{name} would make a plain `up` demand {sorted(extra)}"


def test_flower_publishes_only_on_loopback(services: dict[str, Any]) -> None:
    """Flower's port 5555 is published on 127.0.0.1 only."""
    ports = [_published(port) for port in services["flower"]["ports"]]
    assert (("127.0.0.1", FLOWER_PORT)) in ports, ports
    for host_ip, _ in ports:
        assert host_ip == "127.0.0.1", f"flower published beyond loopback: {ports}"


def test_flower_gets_basic_auth_but_not_the_api_key(services: dict[str, Any]) -> None:
    """Flower takes FLOWER_BASIC_AUTH from .env without `:?`, and never sees DD_API_KEY."""
    flower = services["flower"]
    env = _environment(flower)
    assert env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH")
    assert not _required_substitutions(env["FLOWER_BASIC_AUTH"])
    assert "DD_API_KEY" not in env
    assert "env_file" not in flower, "an env_file would hand flower the whole .env, key included"


def test_flower_watches_the_workers_broker(services: dict[str, Any]) -> None:
    """Flower uses the workers' Redis URL and key prefix, so it sees their queue and events."""
    flower, worker = _environment(services["flower"]), _environment(services["worker"])
    for name in ("FORWARDER_REDIS_URL", "FORWARDER_KEY_PREFIX"):
        assert flower[name] == worker[name], name


@pytest.mark.parametrize("basic_auth", [None, "", "admin", "admin:", ":secret"])
def test_flower_refuses_to_start_without_basic_auth(
    services: dict[str, Any], tmp_path: Path, basic_auth: str | None
) -> None:
    """Without FLOWER_BASIC_AUTH=user:password flower exits non-zero and never runs celery."""
    result, celery_argv = _run_flower_script(services, tmp_path, basic_auth)
    assert result.returncode != 0
    assert celery_argv is None, "celery started without basic auth"
    assert "FLOWER_BASIC_AUTH" in result.stderr


def test_flower_runs_celery_flower_on_its_port(services: dict[str, Any], tmp_path: Path) -> None:
    """With basic auth set, the container execs `celery -A workers flower` on port 5555."""
    result, celery_argv = _run_flower_script(services, tmp_path, "admin:secret")
    assert result.returncode == 0, result.stderr
    assert celery_argv is not None
    assert celery_argv[:3] == ["-A", "workers", "flower"]
    assert f"--port={FLOWER_PORT}" in celery_argv
    # Published ports reach the container's interface, not its loopback.
    assert "--address=0.0.0.0" in celery_argv


def test_dockerfile_installs_the_flower_extra() -> None:
    """The image installs the project's `flower` extra, which pyproject.toml defines."""
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert "flower" in extras
    installed = set().union(*(set().union(*_project_targets(argv)) for argv in _pip_installs()))
    assert "flower" in installed, _pip_installs()


def test_worker_exposes_metrics_to_the_compose_network_only(services: dict[str, Any]) -> None:
    """The worker exposes its metrics port on the compose network, listens on all of its
    interfaces, and publishes nothing beyond loopback."""
    worker = services["worker"]
    port = _environment(worker)["FORWARDER_METRICS_PORT"]
    assert port in [str(p).split("/")[0] for p in worker["expose"]]
    assert _environment(worker)["FORWARDER_METRICS_HOST"] == "0.0.0.0"
    for host_ip, _ in (_published(p) for p in worker.get("ports", [])):
        assert host_ip == "127.0.0.1", "worker metrics published beyond loopback"


def test_metrics_port_is_the_settings_default(services: dict[str, Any]) -> None:
    """Compose's worker and the Dockerfile's EXPOSE use the Settings default metrics port."""
    default = str(Settings.model_fields["metrics_port"].default)
    assert _environment(services["worker"])["FORWARDER_METRICS_PORT"] == default
    exposed = {
        port.split("/")[0]
        for name, args in _final_stage()
        if name == "EXPOSE"
        for port in args.split()
    }
    assert default in exposed, exposed


def test_env_example_names_every_settings_variable() -> None:
    """.env.example lists every environment variable config.settings.Settings reads."""
    named = {name for name, *_ in _env_example()}
    missing = set(settings_variables()) - named
    assert not missing, f".env.example does not document {sorted(missing)}"


def test_env_example_names_every_compose_substitution(compose: dict[str, Any]) -> None:
    """.env.example lists every ${VAR} that docker-compose.yml substitutes."""
    named = {name for name, *_ in _env_example()}
    missing = _substitutions(compose) - named
    assert not missing, f".env.example does not document {sorted(missing)}"


def test_env_example_names_nothing_unknown(compose: dict[str, Any]) -> None:
    """Every variable in .env.example is read by the settings or substituted by compose."""
    known = set(settings_variables()) | _substitutions(compose)
    unknown = {name for name, *_ in _env_example()} - known
    assert not unknown, f".env.example names variables nothing reads: {sorted(unknown)}"


def test_env_example_documents_each_variable_once() -> None:
    """Each variable in .env.example appears once, right under a comment saying what it is."""
    entries = _env_example()
    names = [name for name, *_ in entries]
    assert len(names) == len(set(names)), "a variable appears twice"
    for name, _, _, above in entries:
        assert above.startswith("#"), f"{name} has no comment above it"
        assert not _ENV_LINE.match(above), f"{name} has no comment of its own above it"
        assert "default" in above, f"{name}'s comment does not say its default"


def test_env_example_requires_only_the_api_key_as_a_placeholder() -> None:
    """Only DD_API_KEY is uncommented, with an empty placeholder; the rest are commented out."""
    uncommented = {name: value for name, value, commented, _ in _env_example() if not commented}
    assert uncommented == {"DD_API_KEY": ""}


@pytest.mark.usefixtures("clean_env")
def test_env_example_shows_the_settings_defaults() -> None:
    """Each commented-out setting in .env.example shows the value Settings uses by default."""
    variables = settings_variables()
    for name, value, commented, _ in _env_example():
        if not commented or name not in variables:
            continue
        field = variables[name]
        default = Settings.model_fields[field].default
        if value == "":
            assert default is None, f"{name} shows no default, but it is {default!r}"
        else:
            text: dict[str, Any] = {field: value}  # parsed as Settings parses the environment
            parsed = getattr(Settings(**text), field)
            assert parsed == default, f"{name} shows {value!r}, but the default is {default!r}"


def test_env_file_stays_out_of_git() -> None:
    """.gitignore ignores .env, the copy of .env.example that holds the API key."""
    patterns = {line.strip() for line in GITIGNORE.read_text(encoding="utf-8").splitlines()}
    assert ".env" in patterns
    assert ".env.example" not in patterns


INGEST_PORT = "9642"


def test_ingest_is_opt_in_and_published_on_loopback_only(services: dict[str, Any]) -> None:
    """The ingest endpoint runs only with `--profile ingest`, reachable on 127.0.0.1 only."""
    ingest = services["ingest"]
    assert ingest["profiles"] == ["ingest"]
    ports = [_published(port) for port in ingest["ports"]]
    assert ports == [("127.0.0.1", INGEST_PORT)], ports


def test_ingest_serves_the_settings_port_with_its_own_keys(services: dict[str, Any]) -> None:
    """It runs `dora-forwarder serve` on the settings' port, with ingest keys, never DD_API_KEY."""
    from config import Settings  # noqa: PLC0415

    ingest = services["ingest"]
    argv = _argv(ingest["command"])
    assert argv[:2] == ["dora-forwarder", "serve"]
    assert argv[argv.index("--port") + 1] == str(Settings.model_fields["ingest_port"].default)
    env = _environment(ingest)
    assert env["FORWARDER_INGEST_KEYS"].startswith("${FORWARDER_INGEST_KEYS")
    assert "DD_API_KEY" not in env
    assert "env_file" not in ingest
    assert env["FORWARDER_REDIS_URL"] == _environment(services["worker"])["FORWARDER_REDIS_URL"]
    assert "/health" in " ".join(ingest["healthcheck"]["test"])
