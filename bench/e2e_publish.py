"""Acceptance run: N incidents through `dora-forwarder publish` to a local stand-in API.

Each incident is published started, then finished; a tenth of them twice. The script starts
a real worker (`dora-forwarder worker`, embedded beat) against real Redis, publishes with
the CLI, waits for the stand-in to hold every final state, and checks:

- every incident's final state at the API is exactly what was published;
- requests <= distinct states published (a duplicate costs nothing);
- no incident went back to a start-only state after its finish was accepted.

    python -m bench.e2e_publish --incidents 10000

Talks only to 127.0.0.1. Exit code 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness.stack import child_env, delete_keys
from harness.standin import StandinServer

STARTED_AT = 1_700_000_000
FINISHED_AT = 1_700_000_900
NS = 1_000_000_000


def write_events(path: Path, incidents: int) -> tuple[int, dict[str, dict[str, Any]]]:
    """Write the JSON lines; return the line count and each incident's expected state."""
    expected: dict[str, dict[str, Any]] = {}
    lines: list[str] = []
    for i in range(incidents):
        incident = f"incident-{i:012d}"
        start = {
            "id": incident,
            "started_at": STARTED_AT + i,
            "services": [f"svc-{i % 50}"],
            "env": "prod",
            "severity": "SEV-2",
        }
        finish = {"id": incident, "finished_at": FINISHED_AT + i}
        lines.append(json.dumps(start))
        lines.append(json.dumps(finish))
        if i % 10 == 0:  # a tenth published twice
            lines.append(json.dumps(start))
            lines.append(json.dumps(finish))
        expected[incident] = {
            **start,
            "started_at": (STARTED_AT + i) * NS,
            "finished_at": (FINISHED_AT + i) * NS,
        }
    path.write_text("\n".join(lines) + "\n")
    return len(lines), expected


def run(incidents: int, concurrency: int, redis_url: str, timeout_s: float) -> dict[str, Any]:
    """Do one acceptance run and return its figures."""
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    api_key = f"e2e-key-{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory() as tmp, StandinServer(api_key) as standin:
        events = Path(tmp) / "events.jsonl"
        lines, expected = write_events(events, incidents)
        env = child_env(
            DD_API_KEY=api_key,
            FORWARDER_API_URL=standin.url,
            FORWARDER_REDIS_URL=redis_url,
            FORWARDER_KEY_PREFIX=prefix,
        )
        log_path = Path(tmp) / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workers.cli",
                    "worker",
                    f"--concurrency={concurrency}",
                    "--loglevel=WARNING",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                env=env,
            )
        try:
            started = time.monotonic()
            publish = subprocess.run(
                [sys.executable, "-m", "workers.cli", "publish", str(events)],
                env=env,
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
            )
            published = time.monotonic()
            if publish.returncode != 0:
                raise SystemExit(f"publish failed: {publish.stderr}")
            deadline = started + timeout_s
            drained = None
            while time.monotonic() < deadline:
                latest = standin.latest()
                if len(latest) == incidents and all(
                    "finished_at" in body for body in latest.values()
                ):
                    drained = time.monotonic()
                    break
                time.sleep(0.05)
            latest = standin.latest()
            requests = len(standin.requests())
            exact = sum(1 for i, body in latest.items() if body == expected.get(i))
            figures = {
                "incidents": incidents,
                "lines_published": lines,
                "distinct_states": 2 * incidents,
                "publish_s": round(published - started, 2),
                "drain_s": round(drained - started, 2) if drained else None,
                "requests": requests,
                "exact_final_states": exact,
                "regressions": len(standin.regressions()),
                "worker_log_has_key": api_key in log_path.read_text(errors="replace"),
            }
        finally:
            worker.terminate()
            worker.wait(60)
            delete_keys(redis_url, "{" + prefix + "}*")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--redis-url", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    args = parser.parse_args()
    figures = run(args.incidents, args.concurrency, args.redis_url, args.timeout)
    for name, value in figures.items():
        print(f"{name:<20} {value}")
    ok = (
        figures["drain_s"] is not None
        and figures["exact_final_states"] == args.incidents
        and figures["requests"] <= figures["distinct_states"]
        and figures["regressions"] == 0
        and not figures["worker_log_has_key"]
    )
    print("result               " + ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
