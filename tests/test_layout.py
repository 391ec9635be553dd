"""The layout's rules, checked: what each part may import, and how big a module may grow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("forwarder", "config", "workers")

PURE = (
    "workers.delivery.records",
    "workers.delivery.fold",
    "workers.delivery.outcome",
    "workers.delivery.settlement",
    "workers.delivery.sendable",
    "workers.delivery.verdicts",
    "workers.delivery.operations",
    "workers.delivery.claim_rows",
    "workers.delivery.gate",
    "workers.delivery.ratelimit",
    "workers.delivery.backoff",
    "workers.delivery.breaker",
    "workers.delivery.window",
    "workers.delivery.poison",
    "forwarder.jsontext",
    "forwarder.sentinel_url",
    "forwarder.replicas",
    "workers.delivery.breaker",
    "workers.delivery.window",
    "workers.ingest.request",
    "workers.ingest.jsonapi",
    "workers.ingest.keys",
    "workers.ingest.sources.document",
    "workers.ingest.sources.mapped",
    "workers.ingest.sources.matchers",
    "workers.ingest.sources.ids",
    "workers.ingest.sources.signatures",
    "workers.ingest.sources.alertmanager",
    "workers.ingest.sources.pagerduty",
    "workers.ingest.sources.github",
    "workers.ingest.sources.gitlab",
    "workers.ops.preflight",
    "workers.ops.doctor",
    "workers.ops.doctor_records",
    "workers.ops.doctor_redis",
    "workers.ops.doctor_fleet",
)
"""Policy modules: they decide, others carry the decisions out."""

IO_PACKAGES = (
    "redis",
    "httpx",
    "aiohttp",
    "celery",
    "kombu",
    "billiard",
    "starlette",
    "uvicorn",
)
CELERY_PACKAGES = ("celery", "kombu", "billiard")
CELERY_AWARE = {"workers/celery_app.py", "workers/tasks.py"}
MAX_MODULE_LINES = 400


def product_modules() -> list[Path]:
    return sorted(path for part in PRODUCT for path in (REPO / part).rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of its code."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module)
    return roots


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_load_no_io_library(module: str) -> None:
    """Importing a policy module, in a fresh interpreter, loads no Redis, HTTP or Celery code."""
    probe = (
        f"import sys, {module}\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({IO_PACKAGES!r}))\n"
        "print(','.join(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_only_the_celery_wiring_imports_celery() -> None:
    """Celery, kombu and billiard are imported by celery_app.py and tasks.py alone."""
    offenders = {
        str(path.relative_to(REPO))
        for path in product_modules()
        if any(name.split(".")[0] in CELERY_PACKAGES for name in imported_roots(path))
    }
    assert offenders <= CELERY_AWARE


def test_workers_use_no_private_forwarder_module() -> None:
    """``workers`` and ``config`` reach ``forwarder`` through its public or declared modules."""
    offenders = {
        f"{path.relative_to(REPO)}: {name}"
        for path in product_modules()
        if not path.is_relative_to(REPO / "forwarder")
        for name in imported_roots(path)
        if name.startswith("forwarder._")
    }
    assert not offenders


def test_no_product_module_is_over_the_limit() -> None:
    """No module of the product is longer than 400 lines."""
    long = {
        str(path.relative_to(REPO)): lines
        for path in product_modules()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long


def test_each_folder_says_what_it_is() -> None:
    """Every package of the product opens with a docstring."""
    silent = [
        str(init.relative_to(REPO))
        for part in PRODUCT
        for init in (REPO / part).rglob("__init__.py")
        if ast.get_docstring(ast.parse(init.read_text())) is None
    ]
    assert not silent
