"""Where a loaded worker's CPU goes: py-spy samples, summed by the pump's parts.

    .venv/bin/pip install py-spy               # not a dependency: a profiler
    python -m bench.profile                    # 1 process, 20,000 incidents, 0 ms API

Starts a dora-forwarder worker (``--concurrency`` processes) against the stand-in API, waits
until it is warm, publishes the incidents and records the worker's process group with
``py-spy record --subprocesses`` while it delivers them. Each sample of a pool process is
put in the first part of the pump its stack passes through (the HTTP client, the fold, the
claim...), else the event loop's own work; the main process and beat are reported apart.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from bench.benchmark import Standin, event, running

PARTS = (
    ("DatadogSender.send", "sending: the HTTP client (aiohttp) and the request's body"),
    ("Intake.fold", "folding stream entries into state (decode, JSON, fold.lua)"),
    ("Store.claim", "claiming due incidents (claim.lua, reading claims)"),
    ("_claim_more", "deciding each claim's request (settlement policy, validation)"),
    ("Pump._settle", "settling answers (settle.lua, the gate's update)"),
    ("Pump._collect", "collecting answers (asyncio.wait over requests in flight)"),
    ("Store.read", "reading the stream"),
)


def part_of(stack: str) -> str:
    """The part of the pump a pool process's sample belongs to."""
    if "Worker.workloop" not in stack:
        return "beat" if "beat.py" in stack else "main process"
    for marker, name in PARTS:
        if marker in stack:
            return name
    return "event loop and sockets (between the parts)"


def summarize(raw: Path) -> list[tuple[str, int]]:
    """Samples per part, most first, from py-spy's raw (collapsed) output."""
    parts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        parts[part_of(stack)] += int(count)
    return parts.most_common()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--incidents", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=15, help="seconds to sample")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("bench.profile: py-spy is not installed (.venv/bin/pip install py-spy)")
    standin = Standin(latency_ms=args.latency_ms)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "samples.raw"
        try:
            with running("dora", args.redis_url, standin, args.processes) as system:
                tag = uuid.uuid4().hex[:8]
                events = [event(f"profile-{tag}-{i:010d}", i) for i in range(args.incidents)]
                recorder = subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(system.worker.process.pid),
                        "--subprocesses",
                        "--rate",
                        "200",
                        "--duration",
                        str(args.seconds),
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)  # py-spy attaches to every process of the group first
                system.send(events)
                recorder.wait(args.seconds + 60)
        finally:
            standin.stop()
        parts = summarize(raw)
    pool = sum(count for name, count in parts if name not in ("main process", "beat"))
    print("| part of a pool process | share of its samples |\n|---|---|")
    for name, count in parts:
        if name not in ("main process", "beat"):
            print(f"| {name} | {count / pool:.0%} |")
    others = ", ".join(
        f"{name} {count}" for name, count in parts if name in ("main process", "beat")
    )
    print(f"\n{pool} pool samples; outside the pool: {others or 'none'}")


if __name__ == "__main__":
    main()
