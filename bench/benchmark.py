"""Benchmarks: dora-forwarder next to the yardstick, in one run, on one machine, one stand-in.

    python -m bench.benchmark                 # everything (about 5 minutes on 2 cores)
    python -m bench.benchmark --only producer --only idle
    python -m bench.benchmark --json bench/results/run.json

Measures, as issue 4 asks: the producer (publish latency, publish_many throughput, raw
XADD as the floor); end-to-end throughput of 20,000 incidents at 0 and 50 ms of API latency
with 1 and 2 worker processes; idle latency (one event at a time, publish to API receipt);
behaviour at a rate limit (share of the limit delivered, 429s per window); and worker RSS
while 100,000 incidents wait behind a closed gate. The stand-in API runs as its own process
(`python -m harness.standin`); everything talks over 127.0.0.1, and every wait is bounded.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.footprint import cpu_seconds, idle_cpu_share, memory
from forwarder import Publisher, to_event
from forwarder.entry import encode_entry
from forwarder.protocol import GateField, RedisKeys
from harness.stack import REPO, Worker, child_env, delete_keys

API_KEY = f"bench-key-{uuid.uuid4().hex}"
YARDSTICK_QUEUE = "bench-yardstick"
"""One queue for every yardstick run: its app reads the name once, at import."""
SYSTEMS = ("dora", "yardstick")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Standin:
    """The stand-in API in a process of its own, driven over its control endpoints."""

    def __init__(self, latency_ms: float = 0.0, rate_limit: str | None = None) -> None:
        argv = [
            sys.executable,
            "-m",
            "harness.standin",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--latency-ms",
            str(latency_ms),
            "--request-log-size",
            "120000",
        ]
        if rate_limit:
            argv += ["--rate-limit", rate_limit]
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.url = line.rsplit(" ", 1)[-1].strip()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def state(self) -> dict[str, Any]:
        return dict(self.client.get("/_standin/state", params={"latest": "0"}).json())

    def accepted(self) -> int:
        return int(self.state()["accepted_ids"]["dora_failure"])

    def received_more_than(self, count: int) -> bool:
        """Whether more than ``count`` requests have arrived, whatever their answers."""
        return int(self.state()["requests"]) > count

    def requests(self) -> list[dict[str, Any]]:
        return list(self.client.get("/_standin/requests").json())

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


WORKER_ENV: dict[str, str] = {}
"""Extra environment of every dora-forwarder worker (``--worker-env``), e.g. to A/B a setting."""


class System:
    """One forwarder under test: its worker processes and its producer."""

    def __init__(
        self, name: str, redis_url: str, api_url: str, processes: int, directory: Path, **env: str
    ) -> None:
        self.name, self.redis_url = name, redis_url
        self.prefix = f"bench-{uuid.uuid4().hex[:10]}" if name == "dora" else YARDSTICK_QUEUE
        base = child_env(DD_API_KEY=API_KEY)
        if name == "dora":
            base.update(
                FORWARDER_REDIS_URL=redis_url,
                FORWARDER_KEY_PREFIX=self.prefix,
                FORWARDER_API_URL=api_url,
                **WORKER_ENV,
                **env,
            )
            argv, app = ["worker", "--beat", f"--concurrency={processes}"], "workers"
            self.publisher: Publisher | None = Publisher.from_url(redis_url, key_prefix=self.prefix)
        else:
            base.update(
                YARDSTICK_REDIS_URL=redis_url,
                YARDSTICK_API_URL=api_url,
                YARDSTICK_QUEUE=self.prefix,
            )
            os.environ.update(YARDSTICK_REDIS_URL=redis_url, YARDSTICK_QUEUE=YARDSTICK_QUEUE)
            argv, app = ["worker", f"--concurrency={processes}"], "bench.yardstick"
            self.publisher = None
        self.worker = Worker(
            argv,
            base,
            directory / f"{name}-{self.prefix}.log",
            directory,
            app=app,
            loglevel="WARNING",
        )

    def send(self, events: list[dict[str, Any]], stop: threading.Event | None = None) -> None:
        """Publish as each system's users would: pipelined for dora, .delay() per event.

        Stops early when ``stop`` is set (a run that hit its time cap).
        """
        if self.publisher is not None:
            for start in range(0, len(events), 1000):
                self.publisher.publish_many(events[start : start + 1000])
            return
        from bench.yardstick import send_incident  # noqa: PLC0415 - reads its env on import

        for index, item in enumerate(events):
            if stop is not None and index % 100 == 0 and stop.is_set():
                return
            send_incident.delay(to_event(item).attributes())

    def stop(self) -> None:
        self.worker.stop()
        if self.publisher is not None:
            self.publisher.close()
        delete_keys(self.redis_url, "{" + self.prefix + "}*", self.prefix + "*")


@contextmanager
def running(
    name: str, redis_url: str, standin: Standin, processes: int, **env: str
) -> Iterator[System]:
    """A started system, warmed up (one event delivered), stopped and cleaned afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        system = System(name, redis_url, standin.url, processes, Path(tmp), **env)
        try:
            before = standin.accepted()
            system.send([event(f"warmup-{uuid.uuid4().hex}")])
            wait(lambda: standin.accepted() > before, 60, f"{name} to start")
            yield system
        finally:
            system.stop()


def event(incident: str, index: int = 0) -> dict[str, Any]:
    """One complete incident (start and finish in one event): one request for either system."""
    return {
        "id": incident,
        "started_at": 1_700_000_000 + index,
        "finished_at": 1_700_000_600 + index,
        "services": ["api"],
        "env": "prod",
    }


def wait(condition: Callable[[], bool], timeout_s: float, what: str) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    print(f"  (gave up waiting for {what} after {timeout_s:g} s)", file=sys.stderr)
    return False


# --- 1. producer ---------------------------------------------------------------------------


def producer(redis_url: str, samples: int = 20_000, batch_events: int = 100_000) -> dict[str, Any]:
    """publish() latency and publish_many() throughput, next to raw XADD on one connection."""
    keys = RedisKeys(f"bench-{uuid.uuid4().hex[:10]}")
    client = redis.Redis.from_url(redis_url)
    publisher = Publisher(client, key_prefix=keys.prefix)
    events = [event(f"producer-{i:012d}", i) for i in range(samples)]
    fields = encode_entry(to_event(events[0]))
    try:
        for item in events[:1000]:  # warm up the connection and pydantic
            publisher.publish(item)
        timings = []
        for item in events:
            start = time.perf_counter_ns()
            publisher.publish(item)
            timings.append((time.perf_counter_ns() - start) / 1000)
        raw = []
        for _ in range(samples):
            start = time.perf_counter_ns()
            client.xadd(keys.ingest, fields)
            raw.append((time.perf_counter_ns() - start) / 1000)
        many = [event(f"many-{i:012d}", i) for i in range(batch_events)]
        start_s = time.perf_counter()
        for chunk in range(0, batch_events, 1000):
            publisher.publish_many(many[chunk : chunk + 1000])
        many_s = time.perf_counter() - start_s
        start_s = time.perf_counter()
        for _chunk in range(0, batch_events, 1000):
            pipe = client.pipeline(transaction=False)
            for _ in range(1000):
                pipe.xadd(keys.ingest, fields)
            pipe.execute()
        raw_many_s = time.perf_counter() - start_s
    finally:
        client.delete(keys.ingest)
        client.close()
    return {
        "publish_median_us": statistics.median(timings),
        "publish_p99_us": percentile(timings, 0.99),
        "xadd_median_us": statistics.median(raw),
        "xadd_p99_us": percentile(raw, 0.99),
        "publish_many_per_s": batch_events / many_s,
        "xadd_pipelined_per_s": batch_events / raw_many_s,
    }


# --- 2. end to end -------------------------------------------------------------------------


def end_to_end(
    redis_url: str,
    name: str,
    *,
    latency_ms: float,
    processes: int,
    count: int = 20_000,
    cap_s: float = 60.0,
) -> dict[str, Any]:
    """Incidents per second from the first publish to the last accepted request."""
    standin = Standin(latency_ms=latency_ms)
    try:
        with running(name, redis_url, standin, processes) as system:
            base = standin.accepted()
            tag = uuid.uuid4().hex[:8]
            events = [event(f"e2e-{tag}-{i:010d}", i) for i in range(count)]
            group = system.worker.process.pid
            cpu_before = cpu_seconds(group)
            started = time.monotonic()
            stop = threading.Event()
            producer_thread = threading.Thread(target=system.send, args=(events, stop), daemon=True)
            producer_thread.start()
            done = wait(lambda: standin.accepted() - base >= count, cap_s, f"{name} to drain")
            cpu_used = cpu_seconds(group) - cpu_before
            stop.set()
            ids = {e["id"] for e in events}
            times = [
                r["received_at"]
                for r in standin.requests()
                if r["status"] == 202 and r["id"] in ids
            ]
            delivered = len(
                {r["id"] for r in standin.requests() if r["status"] == 202 and r["id"] in ids}
            )
            elapsed = (max(times) - started) if times else cap_s
            producer_thread.join(timeout=120)
    finally:
        standin.stop()
    return {
        "events_per_s": delivered / elapsed,
        "worker_cpu_us_per_event": cpu_used * 1e6 / max(delivered, 1),
        "delivered": delivered,
        "complete": done,
        "elapsed_s": elapsed,
    }


# --- 3. idle latency -----------------------------------------------------------------------


def idle_latency(redis_url: str, name: str, samples: int = 200) -> dict[str, Any]:
    """One event at a time, publish to API receipt (same monotonic clock), ms."""
    standin = Standin()
    try:
        with running(name, redis_url, standin, 2) as system:
            time.sleep(2.0)  # let the warm-up settle: measure the idle path
            sent: dict[str, float] = {}
            for i in range(samples):
                incident = f"idle-{uuid.uuid4().hex}"
                before = standin.state()["requests"]
                sent[incident] = time.monotonic()
                system.send([event(incident, i)])
                wait(functools.partial(standin.received_more_than, before), 10, "one event")
                time.sleep(0.02 + (i % 5) * 0.01)
            received = {r["id"]: r["received_at"] for r in standin.requests() if r["id"] in sent}
    finally:
        standin.stop()
    latencies = [(received[i] - t) * 1000 for i, t in sent.items() if i in received]
    return {
        "median_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "samples": len(latencies),
    }


# --- 4. at a rate limit --------------------------------------------------------------------


def at_rate_limit(
    redis_url: str, name: str, limit: int = 200, period_s: int = 5, windows: int = 4
) -> dict[str, Any]:
    """Against limit/period with Datadog's headers: share of the limit used, 429s a window."""
    standin = Standin(rate_limit=f"{limit}/{period_s}")
    try:
        with running(name, redis_url, standin, 2) as system:
            tag = uuid.uuid4().hex[:8]
            backlog = [event(f"limit-{tag}-{i:010d}", i) for i in range(limit * (windows + 2))]
            stop = threading.Event()
            threading.Thread(target=system.send, args=(backlog, stop), daemon=True).start()
            time.sleep(period_s * (windows + 1.5))
            stop.set()
            rows = standin.requests()
    finally:
        standin.stop()
    accepted: Counter[int] = Counter()
    throttled: Counter[int] = Counter()
    for row in rows:
        window = int(row["received_wall"] // period_s)
        if row["status"] == 202:
            accepted[window] += 1
        elif row["status"] == 429:
            throttled[window] += 1
    full = sorted(accepted)[1:-1]  # the first and last windows are partial
    return {
        "share_of_limit": statistics.mean(accepted[w] for w in full) / limit if full else 0.0,
        "max_429_per_window": max(throttled.values(), default=0),
        "mean_429_per_window": statistics.mean(throttled[w] for w in full) if full else 0.0,
        "limit": f"{limit}/{period_s} s",
    }


# --- 5. memory with a backlog --------------------------------------------------------------


def rss_with_backlog(
    redis_url: str,
    stages: tuple[int, ...] = (0, 25_000, 50_000, 100_000),
) -> dict[str, Any]:
    """Worker RSS (largest process, and all) as the backlog grows behind a closed gate."""
    standin = Standin()
    figures: dict[str, Any] = {}
    try:
        with running("dora", redis_url, standin, 2) as system:
            client = redis.Redis.from_url(redis_url)
            keys = RedisKeys(system.prefix)
            now_s, _ = client.time()
            client.hset(
                keys.gate,
                mapping={
                    GateField.CLOSED_UNTIL_MS: (int(now_s) + 3600) * 1000,
                    GateField.REASON: "benchmark",
                },
            )
            published = 0
            for stage in stages:
                events = [event(f"rss-{i:012d}", i) for i in range(published, stage)]
                system.send(events)
                published = stage
                wait(lambda: client.xlen(keys.ingest) == 0, 120, "the backlog folded")
                time.sleep(1.0)
                sizes = system.worker.rss_by_process()
                figures[str(stage)] = {
                    "max_process_mb": max(sizes) / 2**20,
                    "all_processes_mb": sum(sizes) / 2**20,
                    "due": client.zcard(keys.due),
                }
            client.close()
    finally:
        standin.stop()
    return figures


# --- 6. footprint: idle CPU and memory ----------------------------------------------------

IDLE_SETTLE_S = 10.0
"""After the warm-up event, before idle CPU is counted: start-up work is over by then."""


def footprint(redis_url: str, name: str, idle_s: float = 60.0) -> dict[str, Any]:
    """A warmed-up worker of 2 processes with nothing to do: CPU over ``idle_s``, memory."""
    standin = Standin()
    try:
        with running(name, redis_url, standin, 2) as system:
            time.sleep(IDLE_SETTLE_S)
            group = system.worker.process.pid
            share = idle_cpu_share(group, idle_s)
            held = memory(group)
    finally:
        standin.stop()
    return {
        "idle_cpu_share": share,
        "pss_mb": held.pss_mb,
        "rss_mb": held.rss_mb,
        "processes": held.processes,
    }


def run_footprint(redis_url: str, idle_s: float = 60.0) -> dict[str, Any]:
    """``dora-forwarder run`` as a small install starts it, idle: CPU over ``idle_s``, memory."""
    standin = Standin()
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    env = child_env(
        DD_API_KEY=API_KEY,
        FORWARDER_REDIS_URL=redis_url,
        FORWARDER_KEY_PREFIX=prefix,
        FORWARDER_API_URL=standin.url,
    )
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "run.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                env=env,
                start_new_session=True,
            )
        publisher = Publisher.from_url(redis_url, key_prefix=prefix)
        try:
            before = standin.accepted()
            publisher.publish(event(f"warmup-{uuid.uuid4().hex}"))
            wait(lambda: standin.accepted() > before, 60, "run to start")
            time.sleep(IDLE_SETTLE_S)
            lines_before = _lines(log_path)
            share = idle_cpu_share(process.pid, idle_s)
            lines = _lines(log_path) - lines_before
            held = memory(process.pid)
        finally:
            publisher.close()
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(10)
            standin.stop()
            delete_keys(redis_url, "{" + prefix + "}*", prefix + "*")
    return {
        "idle_cpu_share": share,
        "pss_mb": held.pss_mb,
        "rss_mb": held.rss_mb,
        "processes": held.processes,
        "log_lines_idle": lines * 60 / idle_s,
    }


def _lines(path: Path) -> int:
    with path.open("rb") as log:
        return sum(1 for _ in log)


def footprints(redis_url: str) -> dict[str, Any]:
    """Both systems' idle workers, then an idle ``dora-forwarder run``."""
    results: dict[str, Any] = {}
    for name in SYSTEMS:
        print(f"footprint {name} (idle a minute) ...", file=sys.stderr, flush=True)
        results[name] = footprint(redis_url, name)
    print("footprint dora-forwarder run (idle a minute) ...", file=sys.stderr, flush=True)
    results["run"] = run_footprint(redis_url)
    return results


# --- where the CPU goes ----------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _group_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def _redis_server_pid(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def cpu_split(
    redis_url: str, latency_ms: float = 50, processes: int = 2, count: int = 20_000
) -> dict[str, Any]:
    """CPU seconds spent by each party of an end-to-end run of dora-forwarder."""
    standin = Standin(latency_ms=latency_ms)
    try:
        with running("dora", redis_url, standin, processes) as system:
            group = system.worker.process.pid
            workers = [
                int(p.name)
                for p in Path("/proc").iterdir()
                if p.name.isdigit() and _group_of(int(p.name)) == group
            ]
            parties = {
                "workers": workers,
                "stand-in API": [standin.process.pid],
                "redis-server": [_redis_server_pid(redis_url)],
            }
            before = {k: sum(_cpu_s(p) for p in v) for k, v in parties.items()}
            own_before = sum(os.times()[:2])
            events = [event(f"cpu-{uuid.uuid4().hex[:8]}-{i:010d}", i) for i in range(count)]
            base = standin.accepted()
            started = time.monotonic()
            system.send(events)
            wait(lambda: standin.accepted() - base >= count, 60, "the run")
            elapsed = time.monotonic() - started
            used = {k: sum(_cpu_s(p) for p in v) - before[k] for k, v in parties.items()}
            used["benchmark (producer, polling)"] = sum(os.times()[:2]) - own_before
    finally:
        standin.stop()
    cores = os.cpu_count() or 1
    return {
        "elapsed_s": elapsed,
        "events_per_s": count / elapsed,
        "share_of_all_cores": {k: v / (elapsed * cores) for k, v in used.items()},
    }


SECTIONS = ("producer", "e2e", "idle", "limit", "rss", "cpu", "footprint")


def run(
    redis_url: str,
    only: set[str],
    e2e_count: int,
    systems: tuple[str, ...] = SYSTEMS,
    process_counts: tuple[int, ...] = (1, 2),
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "producer" in only:
        print("producer ...", file=sys.stderr, flush=True)
        results["producer"] = producer(redis_url)
    if "e2e" in only:
        results["e2e"] = {}
        for name in systems:
            for latency in (0, 50):
                for processes in process_counts:
                    print(f"e2e {name} {latency} ms x{processes} ...", file=sys.stderr, flush=True)
                    cap = 60.0 if name == "dora" else 30.0
                    results["e2e"][f"{name} {latency}ms x{processes}"] = end_to_end(
                        redis_url,
                        name,
                        latency_ms=latency,
                        processes=processes,
                        count=e2e_count,
                        cap_s=cap,
                    )
    if "idle" in only:
        results["idle"] = {}
        for name in SYSTEMS:
            print(f"idle {name} ...", file=sys.stderr, flush=True)
            results["idle"][name] = idle_latency(redis_url, name)
    if "limit" in only:
        results["limit"] = {}
        for name in SYSTEMS:
            print(f"limit {name} ...", file=sys.stderr, flush=True)
            results["limit"][name] = at_rate_limit(redis_url, name)
    if "rss" in only:
        print("rss ...", file=sys.stderr, flush=True)
        results["rss"] = rss_with_backlog(redis_url)
    if "footprint" in only:
        results["footprint"] = footprints(redis_url)
    if "cpu" in only:
        print("cpu split, 50 ms x2 ...", file=sys.stderr, flush=True)
        results["cpu"] = cpu_split(redis_url)
    return results


def report(results: dict[str, Any]) -> str:
    """The table the README quotes."""
    lines = ["| measure | dora-forwarder | yardstick | ratio | target |", "|---|---|---|---|---|"]
    if "producer" in results:
        p = results["producer"]
        lines += [
            f"| publish latency median / p99 | {p['publish_median_us']:.0f} / "
            f"{p['publish_p99_us']:.0f} µs | raw XADD {p['xadd_median_us']:.0f} / "
            f"{p['xadd_p99_us']:.0f} µs | | median <= 150 µs |",
            f"| publish_many throughput | {p['publish_many_per_s']:,.0f} /s | raw pipelined XADD "
            f"{p['xadd_pipelined_per_s']:,.0f} /s | | >= 50,000 /s |",
        ]
    for key in sorted({k.split(" ", 1)[1] for k in results.get("e2e", {})}):
        dora = results["e2e"].get(f"dora {key}", {})
        yard = results["e2e"].get(f"yardstick {key}")
        dora_rate = dora.get("events_per_s", 0.0)
        yard_text = f"{yard['events_per_s']:,.0f} /s" if yard else "not run"
        ratio = f"{dora_rate / max(yard['events_per_s'], 1e-9):.1f}x" if yard else ""
        target = ">= 3,000 /s, >= 15x" if key.startswith("0ms") else ">= 2,500 /s, >= 50x"
        lines.append(
            f"| end to end, {key.replace('x', ', ')} process(es) | {dora_rate:,.0f} /s | "
            f"{yard_text} | {ratio} | {target} |"
        )
    lines += _cost_rows(results)
    if "idle" in results:
        d, y = results["idle"]["dora"], results["idle"]["yardstick"]
        lines.append(
            f"| idle latency median / p99 | {d['median_ms']:.1f} / {d['p99_ms']:.1f} ms |"
            f" {y['median_ms']:.1f} / {y['p99_ms']:.1f} ms | | <= 10 / <= 100 ms |"
        )
    if "limit" in results:
        d, y = results["limit"]["dora"], results["limit"]["yardstick"]
        lines.append(
            f"| at a limit of {d['limit']}: share of the limit delivered | "
            f"{d['share_of_limit']:.0%} | {y['share_of_limit']:.0%} | | >= 95% |"
        )
        lines.append(
            f"| at that limit: 429s per window, max (mean) | {d['max_429_per_window']} "
            f"({d['mean_429_per_window']:.1f}) | {y['max_429_per_window']} "
            f"({y['mean_429_per_window']:.1f}) | | <= 1 |"
        )
    if "rss" in results:
        stages = results["rss"]
        shown = ", ".join(f"{int(k):,}: {v['max_process_mb']:.0f} MB" for k, v in stages.items())
        lines.append(
            f"| worker RSS (largest process) as the backlog grows | {shown} | | | <= 150 MB, flat |"
        )
    if "cpu" in results:
        split = results["cpu"]["share_of_all_cores"]
        shown = ", ".join(f"{name} {share:.0%}" for name, share in split.items())
        lines.append(
            f"| where the CPU went at 50 ms, 2 processes (share of both cores) | {shown} | | | |"
        )
    return "\n".join(lines)


def _cost_rows(results: dict[str, Any]) -> list[str]:
    """Issue 15's rows: CPU per delivered event, idle CPU, memory of every process summed."""
    rows = []
    for key in ("0ms x2", "0ms x1"):
        dora = results.get("e2e", {}).get(f"dora {key}", {})
        yard = results.get("e2e", {}).get(f"yardstick {key}", {})
        if "worker_cpu_us_per_event" in dora:
            yard_text = (
                f"{yard['worker_cpu_us_per_event']:,.0f} µs"
                if "worker_cpu_us_per_event" in yard
                else "not run"
            )
            rows.append(
                f"| worker CPU per delivered event, {key.replace('x', ', ')} process(es) | "
                f"{dora['worker_cpu_us_per_event']:,.0f} µs | {yard_text} | | <= 150 µs |"
            )
    if "footprint" in results:
        d, y, r = (results["footprint"][k] for k in ("dora", "yardstick", "run"))
        rows += [
            f"| idle CPU, worker of 2 processes, over a minute | {d['idle_cpu_share']:.2%} of a "
            f"core | {y['idle_cpu_share']:.2%} | | <= 0.5% |",
            f"| memory, idle worker of 2 processes: PSS (RSS), all processes | "
            f"{d['pss_mb']:.0f} ({d['rss_mb']:.0f}) MB, {d['processes']:.0f} processes | "
            f"{y['pss_mb']:.0f} ({y['rss_mb']:.0f}) MB, {y['processes']:.0f} | | |",
            f"| memory, idle `dora-forwarder run`: PSS (RSS), all processes | "
            f"{r['pss_mb']:.0f} ({r['rss_mb']:.0f}) MB, {r['processes']:.0f} process(es) | | | "
            "<= 90 MB PSS |",
            f"| idle CPU of `dora-forwarder run`; its log lines per idle minute (INFO) | "
            f"{r['idle_cpu_share']:.2%}; {r.get('log_lines_idle', float('nan')):.0f} | | | "
            "<= 0.5%; 0 |",
        ]
    return rows


def median_of(runs: list[Any]) -> Any:
    """Field by field, the median of several runs' figures (non-numbers from the first)."""
    first = runs[0]
    if isinstance(first, dict):
        keys = list(dict.fromkeys(key for run in runs for key in run))  # a section may be new
        return {key: median_of([run[key] for run in runs if key in run]) for key in keys}
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=SECTIONS, action="append")
    parser.add_argument(
        "--redis-url", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    parser.add_argument("--incidents", type=int, default=20_000, help="end-to-end size")
    parser.add_argument(
        "--systems",
        choices=SYSTEMS,
        nargs="+",
        default=list(SYSTEMS),
        help="end to end: which systems (default both)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=[1, 2],
        help="end to end: worker process counts (default 1 2)",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set this in dora-forwarder workers' environment, e.g. FORWARDER_METRICS_PORT=0",
    )
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument(
        "--summarize",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="print the table of the medians of saved runs, and run nothing",
    )
    args = parser.parse_args()
    if args.summarize:
        runs = [json.loads(path.read_text()) for path in args.summarize]
        print(report(median_of(runs)))
        return
    WORKER_ENV.update(item.split("=", 1) for item in args.worker_env)
    results = run(
        args.redis_url,
        set(args.only or SECTIONS),
        args.incidents,
        tuple(args.systems),
        tuple(args.processes),
    )
    print(report(results))
    out = args.json or REPO / "bench" / "results" / f"benchmark-{int(time.time())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"figures saved to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
