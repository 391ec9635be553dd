"""Chaos scenarios: SIGKILL, Redis restart, outage, rate limit, refused key, garbage.

All but garbage publish a mixed workload (``world.mixed``): incidents and deployments,
PATCHes right after their POSTs, DELETEs right after their events and later.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter

from redis.typing import EncodableT, FieldT

from bench.chaos.world import (
    FAILURES,
    EventLike,
    Row,
    Stack,
    await_later,
    drained,
    incidents,
    mixed,
    posts_held,
    publish_all,
    publish_later,
    row,
    stack,
)
from forwarder import PublishError
from forwarder.protocol import LetterField
from harness import streams
from harness.stack import RedisServer, wait_until
from harness.standin import RATE_LIMIT_NAMES, ROUTES
from workers.cli import main as cli_main

LIMIT_NAMES = {(route.method, route.kind): route.limit_name for route in ROUTES}
"""(method, kind) of a recorded request -> the rate limit its route counts against."""


def sigkill(redis_url: str, count: int = 3000, kills: int = 3) -> Row:
    """SIGKILL a worker's whole process tree during delivery, several times, restarting it."""
    fast = {
        "FORWARDER_HTTP_TIMEOUT_S": "1",
        "FORWARDER_LEASE_S": "3",
        "FORWARDER_RECLAIM_IDLE_S": "2",
        "FORWARDER_MAX_IN_FLIGHT": "8",
    }
    with stack(redis_url) as world:
        world.standin.latency_s = 0.02
        work = mixed(count, "kill")
        steady = world.workers.start(**fast)
        victim = world.workers.start("worker", "--concurrency=2", **fast)
        started = time.monotonic()
        publish_all(world.publisher, work.events)
        for kill in range(kills):
            wait_until(lambda: len(world.standin.requests()) > 0, timeout_s=30, what="traffic")
            time.sleep(1.0)  # let the victim hold claims, then kill it mid-delivery
            victim.kill()
            victim = world.workers.start("worker", "--concurrency=2", **fast)
            if kill == 0:  # the late DELETEs meet the next kills
                publish_later(world, work, timeout_s=5)
        wait_until(drained(world, work), timeout_s=120, what="drain after SIGKILLs")
        bound = kills * 2 * 8  # killed processes x their in-flight claims
        result = row(
            "sigkill",
            world,
            work,
            started,
            f"{kills} SIGKILLs; duplicates allowed <= {bound}",
            duplicate_bound=bound,
        )
        steady.stop()
        return result


def redis_restart(count: int = 2000) -> Row:
    """Crash Redis (SIGKILL; AOF fsync always) mid-run and bring it back; nobody restarts."""
    server = RedisServer().start()
    try:
        with stack(server.url) as world:
            work = mixed(count, "redis")
            world.workers.start(FORWARDER_HTTP_TIMEOUT_S="1", FORWARDER_LEASE_S="3")
            started = time.monotonic()
            retried = 0
            restart = threading.Thread(target=_crash_and_restart, args=(server, 1.0))
            for index, event in enumerate(work.events):
                if index == len(work.events) // 4:
                    restart.start()  # Redis goes away while producers and workers are busy
                retried += _publish_acknowledged(world, event)
            restart.join()
            await_later(world, work)
            for event in work.later:
                retried += _publish_acknowledged(world, event)
            wait_until(drained(world, work), timeout_s=120, what="drain after restart")
            return row(
                "redis_restart",
                world,
                work,
                started,
                f"Redis SIGKILLed and restarted once; {retried} publish retries",
                publish_retries=retried,
            )
    finally:
        server.stop()


def _publish_acknowledged(world: Stack, event: EventLike) -> int:
    """Publish ``event`` as a producer does: retry until acknowledged; return the retries."""
    retries = 0
    while True:
        try:
            world.publisher.publish(event)
        except PublishError:
            retries += 1
            time.sleep(0.05)
        else:
            return retries


def _crash_and_restart(server: RedisServer, down_s: float) -> None:
    server.crash()
    time.sleep(down_s)
    server.start()


def outage(redis_url: str, count: int = 2000, outage_s: float = 10.0) -> Row:
    """The API answers 503 to everything for a while, then recovers."""
    with stack(redis_url) as world:
        world.standin.respond_always(503)
        work = mixed(count, "outage")
        worker = world.workers.start(FORWARDER_BACKOFF_MAX_S="1")
        started = time.monotonic()
        publish_all(world.publisher, work.events)
        client = world.redis()
        wait_until(
            lambda: client.zcard(world.keys.due) > count // 2,
            timeout_s=30,
            what="the backlog in Redis",
        )
        rss_start = worker.rss_bytes()
        in_flight_max = 0
        while time.monotonic() - started < outage_s:
            in_flight_max = max(in_flight_max, int(client.zcard(world.keys.inflight)))
            time.sleep(0.1)
        rss_end = worker.rss_bytes()
        world.standin.respond_always(None)
        publish_later(world, work, timeout_s=60)  # once recovered, some POSTs arrived first
        wait_until(drained(world, work), timeout_s=120, what="drain after the outage")
        client.close()
        growth_mb = (rss_end - rss_start) / 2**20
        return row(
            "api_outage_503",
            world,
            work,
            started,
            f"{outage_s:g} s of 503s; RSS of the worker's 4 processes {rss_end / 2**20:.0f} MB, "
            f"{growth_mb:+.1f} MB during the outage; at most {in_flight_max} claim(s) in "
            "flight (a probe: no answer had told the limits), the backlog waited in Redis",
            rss_growth_mb=growth_mb,
            in_flight_max=in_flight_max,
        )


def rate_limited(
    redis_url: str, count: int = 1000, limit: int = 100, period_s: int = 5, workers: int = 3
) -> Row:
    """The API enforces limit/period with Datadog's headers on each of its endpoints (every
    X-RateLimit-Name its own window); a fleet of workers shares them."""
    with stack(redis_url) as world:
        for name in RATE_LIMIT_NAMES:
            world.standin.rate_limit(limit, period_s, name=name)
        work = mixed(count, "limit")
        for _ in range(workers):
            world.workers.start("worker", "--concurrency=2")
        world.workers.start("beat")
        started = time.monotonic()
        publish_all(world.publisher, work.events)
        publish_later(world, work, timeout_s=count / limit * period_s)
        wait_until(
            drained(world, work),
            timeout_s=work.published / limit * period_s * 3 + 30,
            what="drain under the rate limit",
        )
        throttled = [world.standin.throttled_per_window(name) for name in RATE_LIMIT_NAMES]
        accepted: Counter[tuple[str, int]] = Counter()
        for request in world.standin.requests():
            if request.status in (202, 404):  # a 404 (DELETE, PATCH) is counted too
                name = LIMIT_NAMES[request.method, request.kind]
                accepted[name, int(request.received_wall / period_s)] += 1
        # The first and last windows are partial (start-up, the tail of the backlog).
        windows = sorted({window for name, window in accepted if name == FAILURES})
        full = [accepted[FAILURES, w] for w in windows[1:-1]] or [
            accepted[FAILURES, w] for w in windows
        ]
        share = sum(full) / (len(full) * limit)
        most = max((n for windows in throttled for n in windows.values()), default=0)
        return row(
            "rate_limit",
            world,
            work,
            started,
            f"limit {limit}/{period_s} s on each endpoint, {workers} workers x 2 processes; "
            f"max 429s in one window of one endpoint: {most}; full windows of POST /failure "
            f"used {share:.0%} of its limit",
            max_429_per_window=most,
            share_of_limit=share,
            max_accepted_per_window=max(accepted.values()),
        )


def auth_then_fixed(
    redis_url: str, count: int = 500, bad_for_s: float = 5.0, app_key_wrong_for_s: float = 3.0
) -> Row:
    """The API key is refused (403) for a while; the workers restart with the right one but
    a wrong application key: POSTs flow, PATCH and DELETE wait; then with both right."""
    good_key = f"chaos-key-{uuid.uuid4().hex}"
    with stack(redis_url, api_key=good_key) as world:
        work = mixed(count, "auth")
        pause = {"FORWARDER_AUTH_PAUSE_S": "1"}
        wrong = world.workers.start(key=f"wrong-key-{uuid.uuid4().hex}", **pause)
        started = time.monotonic()
        publish_all(world.publisher, work.events)
        time.sleep(bad_for_s)
        refused = world.standin.status_counts().get(403, 0)
        wrong.stop()
        errors = sum(
            1
            for line in wrong.log().splitlines()
            if "ERROR/" in line and "refused the API key" in line
        )
        # The API key right, the application key wrong: every POST goes, PATCH and DELETE
        # wait, kept (refused again whenever the pause ends), the DELETEs published now too.
        seen = len(world.standin.requests())
        phase_started = time.monotonic()
        wrong_app = world.workers.start(app_key=f"wrong-app-key-{uuid.uuid4().hex}", **pause)
        publish_later(world, work, timeout_s=60)
        wait_until(posts_held(world, work), timeout_s=60, what="every POST with a wrong app key")
        time.sleep(app_key_wrong_for_s)
        wrong_app.stop()
        phase_s = time.monotonic() - phase_started
        phase = world.standin.requests()[seen:]
        operations = [r for r in phase if r.method != "POST"]
        app_refused = sum(r.status == 403 for r in operations)
        waiting = len({(r.kind, r.event_id) for r in operations})
        app_gone = sum(r.status in (202, 404) for r in operations)
        posts = sum(r.status == 202 for r in phase if r.method == "POST")
        warnings = sum("application key" in line for line in wrong_app.log().splitlines())
        world.workers.start(**pause)
        wait_until(drained(world, work), timeout_s=120, what="drain with the right keys")
        dead = world.redis().xlen(world.keys.dead)
        return row(
            "auth_403_then_fixed",
            world,
            work,
            started,
            f"{bad_for_s:g} s with a wrong API key: {refused} requests refused, "
            f"{errors} error lines, {dead} dead letters; then {phase_s:.1f} s with a wrong "
            f"application key: {posts} POSTs accepted; {app_refused} PATCH and DELETE requests "
            f"refused (for {waiting} events) and {app_gone} applied, {warnings} log lines",
            refused=refused,
            error_lines=errors,
            dead_letters=dead,
            app_key_refused=app_refused,
            app_key_applied=app_gone,
            app_key_posts=posts,
            app_key_log_lines=warnings,
            app_key_phase_s=phase_s,
            app_key_waiting=waiting,
        )


def garbage(redis_url: str, count: int = 500, bad: int = 50) -> Row:
    """Garbage in the stream between good entries; then a fixed dead letter is replayed."""
    with stack(redis_url) as world:
        events, expected = incidents(count, "garbage")
        world.workers.start(FORWARDER_ORPHAN_WAIT_S="2")
        client = world.redis()
        started = time.monotonic()

        def bad_entry(n: int) -> dict[FieldT, EncodableT]:
            """Garbage of four kinds; each orphan finish names a new incident."""
            event = [
                "{not json",
                "{}",
                json.dumps({"started_at": 1}),
                json.dumps({"id": f"orphan-{uuid.uuid4().hex}", "finished_at": 1}),
            ][n % 4]
            return {"v": "9" if n % 4 == 1 else "1", "kind": "failure", "event": event}

        step = max(1, len(events) // bad)
        for index, event in enumerate(events):
            world.publisher.publish(event)
            if index % step == 0 and index // step < bad:
                client.xadd(world.keys.ingest, bad_entry(index // step))
        wait_until(drained(world, expected), timeout_s=60, what="the good entries")
        wait_until(
            lambda: client.xlen(world.keys.dead) == bad,
            timeout_s=60,
            what="every bad entry dead-lettered",
        )
        world.standin.respond_next(400)  # the next incident is rejected once: a dead letter
        rejected = world.publisher.incident_started(team="ops", id=f"fixed-{uuid.uuid4().hex}")
        wait_until(
            lambda: client.xlen(world.keys.dead) == bad + 1,
            timeout_s=30,
            what="the rejected incident's dead letter",
        )
        os.environ["FORWARDER_REDIS_URL"] = redis_url
        os.environ["FORWARDER_KEY_PREFIX"] = world.prefix
        letter = next(
            i.decode()
            for i, f in streams.entries(client, world.keys.dead)
            if f.get(LetterField.INCIDENT_ID.encode()) == rejected.encode()
        )
        cli_main(["dead-letters", "replay", letter])
        wait_until(
            lambda: rejected in world.standin.latest(),
            timeout_s=30,
            what="the replayed dead letter",
        )
        dead = client.xlen(world.keys.dead)
        client.close()
        return row(
            "garbage_and_replay",
            world,
            expected,
            started,
            f"{bad} bad entries -> {dead} dead letters, each with a reason; "
            "a replayed 400 was delivered",
            dead_letters=dead,
        )
