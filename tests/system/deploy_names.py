"""What the service files may name, read from the code and the compose file they copy.

The systemd units and the Kubernetes manifests run the same commands as docker-compose.yml
and set the same settings as ``config/settings.py`` reads, so their tests take both from
there: a renamed setting or a changed compose command fails them.
"""

from __future__ import annotations

import shlex
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, SecretStr

from config.settings import Settings
from harness.stack import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"


def settings_variables() -> dict[str, str]:
    """Every environment variable the settings read, mapped to its field's name."""
    prefix = Settings.model_config.get("env_prefix", "")
    result = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            result[str(alias.choices[0])] = field
        else:
            result[f"{prefix}{field}".upper()] = field
    return result


def secret_variables() -> frozenset[str]:
    """The variables whose value is a secret: ``SecretStr`` fields, and the hidden Redis URL.

    The Redis URL is a plain ``str`` kept out of reprs (``repr=False``) because it may hold
    the password; a field marked either way counts.
    """
    secret_fields = {
        field
        for field, info in Settings.model_fields.items()
        if info.annotation is SecretStr
        or SecretStr in typing.get_args(info.annotation)
        or info.repr is False
    }
    return frozenset(name for name, field in settings_variables().items() if field in secret_fields)


def setting_default(name: str, text: str) -> bool:
    """Whether ``text`` in variable ``name`` parses, as the environment would, to its default."""
    field = settings_variables()[name]
    default = Settings.model_fields[field].default
    value: dict[str, Any] = {field: text}
    return bool(getattr(Settings(**value), field) == default)


def compose_commands() -> dict[str, list[str]]:
    """The argument list of each compose service that has a ``command``."""
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    result = {}
    for name, service in data["services"].items():
        command = service.get("command")
        if command is None:
            continue
        result[name] = shlex.split(command) if isinstance(command, str) else list(command)
    return result


def compose_image() -> str:
    """The image the compose file builds for the forwarder's services."""
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    image = data["services"]["worker"]["image"]
    assert isinstance(image, str)
    return image


def files_under(folder: Path) -> set[str]:
    """Names of the files in ``folder`` (a new file must be added to its test's list)."""
    return {path.name for path in folder.iterdir() if path.is_file()}
