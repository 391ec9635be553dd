"""Failover run: incidents published through a Sentinel-managed Redis while its primary is
SIGKILLed, delivered by two real workers to the stand-in API.

A primary, a replica and three sentinels on loopback (``harness.sentinel``); two
``dora-forwarder worker`` processes (each with its beat) and a ``Publisher``, all on the
``sentinel://`` URL. The publisher sends ``--incidents`` incidents, one XADD each (start and
finish in one event), from ``--threads`` threads; when a third of them are acknowledged
the primary is SIGKILLed. A publish that raises is tried again with the same id (harmless:
it folds into the same state) until it is acknowledged or ``RETRY_FOR_S`` passes. Then the
run waits for the stand-in to hold every acknowledged incident, and reports:

- acknowledged: publishes that returned (the producer was told "stored");
- lost: acknowledged incidents the stand-in never received (within the deadline);
- wrong: delivered incidents whose final state differs from what was published;
- failover: seconds from the SIGKILL until the sentinels advertise the new primary; then
  the old primary is restarted (as a supervisor would) and rejoins as the new one's
  replica, without which no write could be acknowledged by a replica again;
- publish latency (median, p99) before the SIGKILL, and the publishes that raised.

    python -m bench.failover --replicas 1      # FORWARDER_PUBLISH_REPLICAS=1
    python -m bench.failover --replicas 0      # what asynchronous replication can lose
    python -m bench.failover --replicas 0 --lag-s 0.5   # ... when the replica is cut off

Talks only to 127.0.0.1. Exit code 0 when nothing acknowledged was lost or wrong (with
``--replicas 0`` a loss is reported, not failed: it is what the run measures).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from forwarder import Publisher, PublishError
from forwarder.connection import redis_client
from forwarder.protocol import RedisKeys
from harness.ingest_stream import progress
from harness.sentinel import SentinelCluster
from harness.stack import Worker, wait_until, worker_env
from harness.standin import StandinServer

API_KEY: Final = "bench-failover-api-key-0123456789"
RETRY_FOR_S: Final = 60.0
DELIVERY_DEADLINE_S: Final = 300.0
NS: Final = 1_000_000_000
BASE_S: Final = 1_790_000_000


def incident(number: int, run: str) -> dict[str, Any]:
    started = BASE_S + number
    return {
        "id": f"failover-{run}-{number:08d}",
        "services": ["checkout"],
        "env": "prod",
        "started_at": started,
        "finished_at": started + 60,
    }


@dataclass
class Tally:
    """What the producer threads saw, under one lock."""

    acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)
    latencies_before_s: list[float] = field(default_factory=list)
    raised: int = 0
    gave_up: int = 0
    killed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def produce(
    publisher: Publisher, numbers: range, run: str, tally: Tally, stop: threading.Event
) -> None:
    for number in numbers:
        event = incident(number, run)
        deadline = time.monotonic() + RETRY_FOR_S
        while not stop.is_set():
            started = time.perf_counter()
            try:
                publisher.publish(event)
            except PublishError:
                with tally.lock:
                    tally.raised += 1
                if time.monotonic() > deadline:
                    with tally.lock:
                        tally.gave_up += 1
                    break
                time.sleep(0.05)
                continue
            elapsed = time.perf_counter() - started
            with tally.lock:
                tally.acknowledged[event["id"]] = event
                if not tally.killed:
                    tally.latencies_before_s.append(elapsed)
            break


@dataclass(frozen=True)
class Outcome:
    """What one run measured (see the module's docstring)."""

    replicas: int
    lag_s: float
    incidents: int
    acknowledged: int
    lost: list[str]
    wrong: list[str]
    requests: int
    failover_s: float
    rejoin_s: float
    raised: int
    gave_up: int
    latencies_s: list[float]
    published_s: float

    def summary(self) -> str:
        latencies = self.latencies_s
        median = statistics.median(latencies) * 1000 if latencies else 0.0
        p99 = statistics.quantiles(latencies, n=100)[98] * 1000 if len(latencies) > 100 else 0.0
        return (
            f"replicas={self.replicas}, replica cut off {self.lag_s:g} s before the kill: "
            f"{self.incidents} incidents; acknowledged {self.acknowledged}, lost "
            f"{len(self.lost)}, wrong {len(self.wrong)}, requests {self.requests}; failover "
            f"{self.failover_s:.1f} s, old primary back as a replica after {self.rejoin_s:.1f} "
            f"s more; publishes that raised {self.raised} (gave up {self.gave_up}); publish "
            f"latency before the kill median {median:.2f} ms, p99 {p99:.2f} ms; published in "
            f"{self.published_s:.1f} s"
        )


def run(incidents: int, threads: int, replicas: int, workers: int, lag_s: float) -> Outcome:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-failover-{run_id}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        SentinelCluster() as cluster,
        StandinServer(api_key=API_KEY) as standin,
    ):
        extra = {
            "FORWARDER_REDIS_SENTINEL_MASTER": cluster.master_name,
            "FORWARDER_PUBLISH_REPLICAS": str(replicas),
        }
        fleet = [
            Worker(
                ["worker", "--beat", "--concurrency=1", f"--hostname=failover{n}@%h"],
                worker_env(cluster.url, prefix, standin.url, API_KEY, **extra),
                Path(tmp) / f"worker{n}.log",
                Path(tmp),
            )
            for n in range(workers)
        ]
        publisher = Publisher.from_url(
            cluster.url,
            key_prefix=prefix,
            timeout_s=1.0,
            sentinel_master=cluster.master_name,
            replicas=replicas,
        )
        tally, stop = Tally(), threading.Event()
        share = -(-incidents // threads)
        producers = [
            threading.Thread(
                target=produce,
                args=(
                    publisher,
                    range(n * share, min(incidents, (n + 1) * share)),
                    run_id,
                    tally,
                    stop,
                ),
            )
            for n in range(threads)
        ]
        try:
            started = time.monotonic()
            for thread in producers:
                thread.start()
            wait_until(
                lambda: len(tally.acknowledged) >= incidents // 3, timeout_s=120, what="a third"
            )
            with tally.lock:
                tally.killed = True
            if lag_s > 0:
                # The link between them fails: the replica is paused (it cannot reconnect)
                # and the primary drops it, so what is acknowledged now is on the primary only.
                lagging = cluster.replica_port()
                cluster.pause(lagging)
                cluster.cut_replication()
                time.sleep(lag_s)
            old = cluster.kill_primary()
            if lag_s > 0:
                cluster.pause(lagging, paused=False)
            failover_s = cluster.wait_failover(old, timeout_s=60)
            # A supervisor restarts the old primary; the sentinels' new primary takes it as
            # its replica. Until then no write can have a replica (one is wanted with 1).
            restarted = time.monotonic()
            cluster.restart_as_replica(old)
            rejoin_s = time.monotonic() - restarted
            for thread in producers:
                thread.join(timeout=RETRY_FOR_S * 2)
            published_s = time.monotonic() - started
            acknowledged = dict(tally.acknowledged)

            watcher = redis_client(
                cluster.url, sentinel_master=cluster.master_name, socket_timeout=5
            )
            keys = RedisKeys(prefix)

            def done() -> bool:
                """Every acknowledged incident delivered, or the workers have nothing left:
                every entry the (new) primary holds is folded and nothing is due."""
                if acknowledged.keys() <= standin.latest().keys():
                    return True
                return progress(watcher, keys).settled

            # Past the deadline what is missing is reported as lost, not raised.
            with contextlib.suppress(AssertionError):
                wait_until(done, timeout_s=DELIVERY_DEADLINE_S, what="every delivery")
            watcher.close()
            held = standin.latest()
        finally:
            stop.set()
            publisher.close()
            for worker in fleet:
                worker.stop()
    lost = sorted(set(acknowledged) - set(held))
    wrong = [
        key
        for key, event in acknowledged.items()
        if key in held
        and (
            held[key].get("started_at") != event["started_at"] * NS
            or held[key].get("finished_at") != event["finished_at"] * NS
        )
    ]
    requests = sum(len(standin.requests_for(key)) for key in acknowledged)
    return Outcome(
        replicas=replicas,
        lag_s=lag_s,
        incidents=incidents,
        acknowledged=len(acknowledged),
        lost=lost,
        wrong=wrong,
        requests=requests,
        failover_s=failover_s,
        rejoin_s=rejoin_s,
        raised=tally.raised,
        gave_up=tally.gave_up,
        latencies_s=sorted(tally.latencies_before_s),
        published_s=published_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--lag-s",
        type=float,
        default=0.0,
        help="cut the replica off (SIGSTOP, and the primary drops its link) this long before "
        "the primary's SIGKILL, as a network failure between them would (below the "
        "sentinels' 1 s down-after)",
    )
    args = parser.parse_args()
    outcome = run(args.incidents, args.threads, args.replicas, args.workers, args.lag_s)
    print(f"{outcome.summary()}; {args.threads} producer thread(s), {args.workers} worker(s)")
    if outcome.lost:
        print("lost:", ", ".join(outcome.lost[:10]), "..." if len(outcome.lost) > 10 else "")
    failed = outcome.wrong or (outcome.lost and args.replicas > 0)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
