"""``python -m bench.chaos``: run the scenarios, print a table of their figures."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from bench.chaos import SCENARIOS


def main() -> None:
    # Killed workers drop connections mid-request; the stand-in's server would log each one.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(
        description="The forwarder's fault scenarios against the real stack, with figures."
    )
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument(
        "--redis-url", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    for name in args.only or list(SCENARIOS):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.append(SCENARIOS[name](args.redis_url))
    header = (
        "scenario",
        "published",
        "delivered",
        "lost",
        "dup. requests",
        "429s",
        "drain s",
        "note",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            f"| {r.scenario} | {r.published} | {r.delivered} | {r.lost} | "
            f"{r.duplicate_requests} | {r.rate_limited_429s} | {r.drain_s} | {r.note} |"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    # A PATCH before its POST, or a POST after its DELETE, fails the run as a loss does.
    broken = [r for r in rows if r.facts.get("patch_before_post") or r.facts.get("resurrections")]
    sys.exit(1 if broken or any(r.lost for r in rows) else 0)


signal.signal(signal.SIGINT, signal.default_int_handler)
main()
