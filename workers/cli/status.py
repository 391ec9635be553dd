"""``dora-forwarder status``: where events are, the gate, live workers; once or ``--watch``."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import IO

import redis

from config import Settings
from forwarder.protocol import RedisKeys
from workers.cli.common import EXIT_FAILURE, redis_client, when
from workers.ops.replication import describe
from workers.ops.status import Status, live_window_ms, read_status

CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _workers(status: Status) -> str:
    """``3  (host-a: 2, host-b: 1)``: live processes, counted per host."""
    hosts = Counter(name.rsplit(":", 1)[0] for name in status.live_workers)
    if not hosts:
        return "0  (no worker reported recently: is one running?)"
    per_host = ", ".join(f"{host}: {count}" for host, count in sorted(hosts.items()))
    return f"{len(status.live_workers)}  ({per_host})"


def _breaker(status: Status) -> str:
    """``closed``, or since when it is open and when it probes next."""
    if not status.breaker_open:
        failing = status.breaker_failures
        return "closed" + (f"  ({failing} failed requests in a row)" if failing else "")
    return (
        f"open since {when(status.breaker_opened_ms)} (the API looks down): "
        f"{status.breaker_probes} probe(s), next at {when(status.breaker_next_probe_ms)}"
    )


def _app_key(status: Status) -> str:
    """``none waiting``, or how many PATCH/DELETE wait for a usable application key and why."""
    paused = status.app_key_paused_until_ms is not None and (
        status.app_key_paused_until_ms > status.now_ms
    )
    if not status.app_key_waiting and not paused:
        return "none waiting"
    text = f"{status.app_key_waiting} waiting"
    if paused:
        text += f", paused until {when(status.app_key_paused_until_ms)}"
    return text + (f": {status.app_key_detail}" if status.app_key_detail else "")


def format_status(status: Status) -> str:
    """The human-readable table of ``status``."""
    rows = [
        (
            "backlog (stream)",
            f"{status.backlog}  ({status.unread} unread, {status.pending} being folded)",
        ),
        ("due now", str(status.due_now)),
        ("scheduled (retries, waits)", str(status.scheduled)),
        ("in flight", str(status.in_flight)),
        ("dead letters", str(status.dead_letters)),
        (
            "gate",
            "open"
            if status.gate_open
            else f"closed until {when(status.gate_closed_until_ms)} ({status.gate_reason})",
        ),
        ("circuit breaker", _breaker(status)),
        ("PATCH/DELETE (app key)", _app_key(status)),
        ("same-second deployments", f"{status.same_second_total} dead-lettered (total)"),
        ("live workers", _workers(status)),
        *describe(status.replication),
        ("delivered (total)", str(status.delivered_total)),
        ("retries (total)", str(status.retries_total)),
        ("last success", when(status.last_success_ms)),
        ("last error", f"{when(status.last_error_ms)}  {status.last_error or ''}".rstrip()),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def cmd_status(
    settings: Settings, as_json: bool, watch_s: float | None, out: IO[str], err: IO[str]
) -> int:
    """Print the forwarder's state as a table or JSON; with ``watch_s``, again and again.

    Watching ends with Ctrl-C (exit 0). A Redis error ends a single read with exit 2, but
    only shows in the frame while watching, which goes on trying.
    """
    client = redis_client(settings)
    keys = RedisKeys(settings.key_prefix)
    window_ms = live_window_ms(settings)
    clear = watch_s is not None and not as_json and out.isatty()
    try:
        while True:
            try:
                status = read_status(client, keys, window_ms, settings.publish_replicas)
                frame = (
                    json.dumps(status.as_dict(), sort_keys=True)
                    if as_json
                    else format_status(status)
                )
            except redis.RedisError as exc:
                message = (
                    f"dora-forwarder: cannot read status from Redis at "
                    f"{settings.redis_url_for_logs}: {exc}"
                )
                if watch_s is None:
                    print(message, file=err)
                    return EXIT_FAILURE
                frame = message
            if watch_s is None:
                print(frame, file=out)
                return 0
            stamp = time.strftime("%H:%M:%S")
            header = "" if as_json else f"every {watch_s:g} s, Ctrl-C to stop  ({stamp})\n"
            print((CLEAR_SCREEN if clear else "") + header + frame, file=out, flush=True)
            if not as_json and not clear:
                print(file=out, flush=True)
            time.sleep(watch_s)
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()
