"""Acceptance run: N incidents and M deployments through `dora-forwarder publish` to a local
stand-in API, with PATCHes and DELETEs.

Each incident is published started, then finished; a tenth of them twice. Each deployment
is published once; a third of them then get a PATCH (change failure and remediation), a
tenth of them a DELETE, and every fiftieth incident a DELETE, each kind by its own
`dora-forwarder publish --kind ...` (failure, deployment, deployment_patch,
deployment_delete, failure_delete), one after the other. The script starts a real worker
(`dora-forwarder worker`, embedded beat, both Datadog keys) against real Redis, waits for
the stand-in to hold every final state and to have answered every DELETE, and checks:

- every incident's and deployment's final state at the API is exactly what was published,
  a PATCHed deployment's with its change_failure and remediation;
- every deleted incident and deployment is gone, and nothing was POSTed after its DELETE;
- no PATCH reached the API before its deployment's POST was accepted;
- requests <= distinct states, PATCHes and DELETEs published (a duplicate costs nothing);
- no incident went back to a start-only state after its finish was accepted.

    python -m bench.e2e_publish --incidents 10000 --deployments 1000

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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from forwarder.protocol import (
    KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_DELETE,
    KIND_DEPLOYMENT_PATCH,
    KIND_FAILURE,
    KIND_FAILURE_DELETE,
)
from harness.stack import child_env, delete_keys, judge
from harness.standin import StandinServer

STARTED_AT = 1_700_000_000
FINISHED_AT = 1_700_000_900
DEPLOYED_AT = 1_700_100_000
NS = 1_000_000_000
KINDS_IN_ORDER: Final = (
    KIND_FAILURE,
    KIND_DEPLOYMENT,
    KIND_DEPLOYMENT_PATCH,
    KIND_DEPLOYMENT_DELETE,
    KIND_FAILURE_DELETE,
)
"""The `publish --kind` runs, in the order they go: a DELETE after its event, a PATCH after
its deployment."""


@dataclass
class Published:
    """What the run publishes: the lines of each kind and the final states they make."""

    lines: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS_IN_ORDER})
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: dict[str, set[str]] = field(
        default_factory=lambda: {"dora_failure": set(), "dora_deployment": set()}
    )

    @property
    def requests_owed(self) -> int:
        """Distinct states (two per incident, one per deployment), PATCHes and DELETEs."""
        incidents = len(self.incidents) + len(self.deleted["dora_failure"])
        deployments = len(self.deployments) + len(self.deleted["dora_deployment"])
        operations = sum(len(self.lines[k]) for k in KINDS_IN_ORDER[2:])
        return 2 * incidents + deployments + operations


def make_events(incidents: int, deployments: int) -> Published:
    """The lines of each kind, and each event's expected final state."""
    out = Published()
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
        copies = 2 if i % 10 == 0 else 1  # a tenth published twice
        out.lines[KIND_FAILURE] += [json.dumps(start), json.dumps(finish)] * copies
        out.incidents[incident] = {
            **start,
            "started_at": (STARTED_AT + i) * NS,
            "finished_at": (FINISHED_AT + i) * NS,
        }
        if i % 50 == 25:
            out.lines[KIND_FAILURE_DELETE].append(json.dumps({"id": incident}))
            out.deleted["dora_failure"].add(out.incidents.pop(incident)["id"])
    for n in range(deployments):
        deployment = f"deployment-{n:012d}"
        started = DEPLOYED_AT + n  # Datadog keeps one deployment per service+env per second
        post = {
            "id": deployment,
            "service": f"svc-{n % 50}",
            "env": "prod",
            "version": f"v{n}",
            "started_at": started,
            "finished_at": started + 120,
        }
        out.lines[KIND_DEPLOYMENT].append(json.dumps(post))
        state: dict[str, Any] = {
            **post,
            "started_at": started * NS,
            "finished_at": (started + 120) * NS,
        }
        if n % 3 == 0:  # a third PATCHed: a change failure, rolled back or forward
            remedy = (
                {"id": f"deployment-{n + 1:012d}", "type": "rollback"}
                if n % 2 == 0
                else {"version": f"v{n + 1}", "type": "rollforward"}
            )
            patch = {"change_failure": True, "remediation": remedy}
            out.lines[KIND_DEPLOYMENT_PATCH].append(json.dumps({"id": deployment, **patch}))
            state.update(patch)
        out.deployments[deployment] = state
        if n % 10 == 5:  # a tenth deleted
            out.lines[KIND_DEPLOYMENT_DELETE].append(json.dumps({"id": deployment}))
            out.deleted["dora_deployment"].add(out.deployments.pop(deployment)["id"])
    return out


def _settled(standin: StandinServer, out: Published) -> bool:
    """The API holds every final state, no deleted id, and has answered every DELETE."""
    held = {kind: standin.latest(kind) for kind in out.deleted}
    finals = (("dora_failure", out.incidents), ("dora_deployment", out.deployments))
    if any(held[kind].get(i) != state for kind, states in finals for i, state in states.items()):
        return False
    answered = {
        (r.kind, r.event_id)
        for r in standin.requests()
        if r.method == "DELETE" and r.status in (202, 404)
    }
    return all(
        i not in held[kind] and (kind, i) in answered
        for kind, ids in out.deleted.items()
        for i in ids
    )


def run(
    incidents: int, deployments: int, concurrency: int, redis_url: str, timeout_s: float
) -> dict[str, Any]:
    """Do one acceptance run and return its figures."""
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    api_key = f"e2e-key-{uuid.uuid4().hex}"
    app_key = f"e2e-app-key-{uuid.uuid4().hex}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        StandinServer(api_key, app_key=app_key) as standin,
    ):
        out = make_events(incidents, deployments)
        files = {}
        for kind, lines in out.lines.items():
            files[kind] = Path(tmp) / f"{kind}.jsonl"
            files[kind].write_text("".join(line + "\n" for line in lines))
        env = child_env(
            DD_API_KEY=api_key,
            DD_APP_KEY=app_key,
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
            publish_s: dict[str, float] = {}
            for kind in KINDS_IN_ORDER:
                if not out.lines[kind]:
                    continue
                began = time.monotonic()
                publish = subprocess.run(
                    [sys.executable, "-m", "workers.cli", "publish", "--kind", kind, files[kind]],
                    env=env,
                    cwd=tmp,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if publish.returncode != 0:
                    raise SystemExit(f"publish --kind {kind} failed: {publish.stderr}")
                publish_s[kind] = round(time.monotonic() - began, 2)
            published = time.monotonic()
            deadline = started + timeout_s
            drained = None
            while time.monotonic() < deadline:
                if _settled(standin, out):
                    drained = time.monotonic()
                    break
                time.sleep(0.05)
            received = judge(
                standin, out.incidents, deployments=out.deployments, deleted=out.deleted
            )
            methods: Counter[str] = Counter(r.method for r in standin.requests())
            logged = log_path.read_text(errors="replace")
            figures = {
                "incidents": incidents,
                "deployments": deployments,
                "lines_published": sum(map(len, out.lines.values())),
                "lines_by_kind": {k: len(v) for k, v in out.lines.items()},
                "publish_s": round(published - started, 2),
                "publish_s_by_kind": publish_s,
                "drain_s": round(drained - started, 2) if drained else None,
                "drain_after_publish_s": round(drained - published, 2) if drained else None,
                "requests": received.requests,
                "requests_by_method": dict(sorted(methods.items())),
                "requests_owed": out.requests_owed,
                "events": received.delivered + len(received.lost),
                "exact_final_states": received.delivered,
                "lost": len(received.lost),
                "deleted": sum(map(len, out.deleted.values())),
                "deleted_before_post": received.superseded,
                "duplicate_posts": received.duplicates,
                "patch_before_post": len(received.patch_before_post),
                "resurrections": len(received.resurrections),
                "regressions": len(standin.regressions()),
                "worker_log_has_key": api_key in logged or app_key in logged,
            }
        finally:
            worker.terminate()
            worker.wait(60)
            delete_keys(redis_url, "{" + prefix + "}*")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--redis-url", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    args = parser.parse_args()
    figures = run(args.incidents, args.deployments, args.concurrency, args.redis_url, args.timeout)
    for name, value in figures.items():
        print(f"{name:<20} {value}")
    ok = (
        figures["drain_s"] is not None
        and figures["lost"] == 0
        and figures["exact_final_states"] == args.incidents + args.deployments
        and figures["requests"] <= figures["requests_owed"]
        and figures["patch_before_post"] == 0
        and figures["resurrections"] == 0
        and figures["regressions"] == 0
        and not figures["worker_log_has_key"]
    )
    print("result               " + ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
