"""The producer spool's costs: what a publish costs while Redis is away (validate, encode,
append, fsync), and how fast the spool drains once Redis is back. Against a redis-server of
its own (AOF, fsync always), on 127.0.0.1.

    python -m bench.spool --events 20000

Prints publish latency (median, p99) direct to Redis and into the spool, and the drain rate.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from forwarder import Publisher
from harness.stack import RedisServer


def incident(number: int) -> dict[str, object]:
    return {
        "id": f"bench-spool-{number:010d}",
        "services": ["checkout"],
        "env": "prod",
        "severity": "SEV-2",
        "started_at": 1_700_000_000 + number,
    }


def latencies_ms(publisher: Publisher, first: int, count: int) -> list[float]:
    taken = []
    for number in range(first, first + count):
        began = time.perf_counter()
        publisher.publish(incident(number))
        taken.append((time.perf_counter() - began) * 1000)
    return sorted(taken)


def shown(name: str, taken: list[float]) -> str:
    p99 = taken[int(len(taken) * 0.99)]
    return f"{name}: median {statistics.median(taken):.3f} ms, p99 {p99:.3f} ms ({len(taken)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    events = parser.parse_args().events
    server = RedisServer().start()
    try:
        with (
            tempfile.TemporaryDirectory() as spool_dir,
            Publisher.from_url(
                server.url, key_prefix="bench-spool", spool_dir=spool_dir
            ) as publisher,
        ):
            print(shown("publish, Redis up (XADD)", latencies_ms(publisher, 0, events)))
            server.crash()
            spooled = latencies_ms(publisher, events, events)
            print(shown("publish, Redis away (spool append + fsync)", spooled))
            waiting = publisher.spooled
            server.start()
            began = time.perf_counter()
            while publisher.spooled:  # the drainer may have started first: count until empty
                publisher.drain_spool()
            seconds = time.perf_counter() - began
            print(f"drain: {waiting} events in {seconds:.2f} s ({waiting / seconds:,.0f}/s)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
