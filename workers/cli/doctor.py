"""``dora-forwarder doctor``: what is wrong and what to do, as a table or one JSON object."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import IO, Any, Final

import httpx

from config import Settings
from workers.cli.common import redis_client
from workers.ops.doctor import diagnose
from workers.ops.doctor_facts import gather
from workers.ops.doctor_records import Check, Level
from workers.ops.logs import redact, secrets_of

EXIT_PROBLEMS: Final = 1
"""At least one check failed (✘). Warnings and reminders leave the exit code 0."""

MARKS: Final = {Level.OK: "✔", Level.INFO: "•", Level.WARN: "⚠", Level.FAIL: "✘"}


def format_checks(checks: Sequence[Check]) -> str:
    """The table: a mark, the check's name, what it found; an indented fix below."""
    width = max(len(check.name) for check in checks)
    lines = []
    for check in checks:
        lines.append(f"{MARKS[check.level]} {check.name:<{width}}  {check.detail}")
        if check.fix:
            lines.append(f"  {'':<{width}}  fix: {check.fix}")
    failed = sum(not check.ok for check in checks)
    warned = sum(check.level is Level.WARN for check in checks)
    lines.append(
        f"\n{failed} problem(s), {warned} warning(s)" if failed or warned else "\nno problem found"
    )
    return "\n".join(lines)


def checks_as_dict(checks: Sequence[Check]) -> dict[str, Any]:
    """The JSON object: ``ok`` (no check failed), and each check's fields."""
    return {
        "ok": all(check.ok for check in checks),
        "checks": [
            {
                "name": check.name,
                "status": check.level.value,
                "ok": check.ok,
                "detail": check.detail,
                "fix": check.fix,
            }
            for check in checks
        ],
    }


def cmd_doctor(
    settings: Settings,
    as_json: bool,
    out: IO[str],
    transport: httpx.BaseTransport | None = None,
    host_ms: Callable[[], float] | None = None,
) -> int:
    """Run every check once and print them; exit 1 if any failed, else 0.

    ``transport`` and ``host_ms`` replace the HTTP transport and this host's clock (tests).
    """
    secrets = secrets_of(settings)
    client = redis_client(settings)
    try:
        facts = gather(settings, client, secrets, transport, host_ms)
    finally:
        client.close()
    checks = diagnose(facts)
    text = (
        json.dumps(checks_as_dict(checks), ensure_ascii=False) if as_json else format_checks(checks)
    )
    # The facts hold no secret by construction; this is the last guard of what is printed.
    print(redact(text, secrets), file=out)
    return 0 if all(check.ok for check in checks) else EXIT_PROBLEMS
