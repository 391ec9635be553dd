"""A snapshot of the forwarder's state in Redis, for ``dora-forwarder status``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import redis

from config import Settings
from forwarder.protocol import CONSUMER_GROUP, GateField, RedisKeys, StatsField
from workers.ops.replication import Replication, from_info, server_address


@dataclass(frozen=True, slots=True)
class Status:
    """Counts of where events are, and the lifetime counters (times in ms since the epoch)."""

    backlog: int
    unread: int
    pending: int
    due_now: int
    scheduled: int
    in_flight: int
    dead_letters: int
    delivered_total: int
    retries_total: int
    last_success_ms: int | None
    last_error: str | None
    last_error_ms: int | None
    gate_closed_until_ms: int | None
    gate_reason: str | None
    breaker_opened_ms: int | None
    """When the circuit breaker opened; None while it is closed."""
    breaker_failures: int
    """Outage answers in a row across the fleet (it opens at FORWARDER_BREAKER_FAILURES)."""
    breaker_probes: int
    """Probes sent since it opened."""
    breaker_next_probe_ms: int | None
    """No probe before this, while it is open."""
    breaker_opened_total: int
    """Times it opened."""
    app_key_waiting: int
    """PATCH and DELETE operations waiting for a usable application key."""
    app_key_paused_until_ms: int | None
    """Datadog refused the application key: no PATCH or DELETE before this."""
    app_key_detail: str | None
    """Why they wait (DD_APP_KEY not set, or refused)."""
    same_second_total: int
    """Deployments dead-lettered because another one of their service and env holds the same
    second at Datadog."""
    live_workers: tuple[str, ...]
    """Pumps (``host:pid``, or ``host:pid-2`` for a process' second) that reported within
    the live window: one per worker process, or per pump thread of ``run``."""
    now_ms: int
    replication: Replication
    """The Redis in use, its replicas, and how many each write waits for."""

    @property
    def gate_open(self) -> bool:
        """Whether workers may send now."""
        return self.gate_closed_until_ms is None or self.gate_closed_until_ms <= self.now_ms

    @property
    def breaker_open(self) -> bool:
        """Whether the circuit breaker holds the fleet back (the API looks down)."""
        return self.breaker_opened_ms is not None

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready values."""
        return {**asdict(self), "gate_open": self.gate_open, "breaker_open": self.breaker_open}


GATE_FIELDS: Final = (
    GateField.CLOSED_UNTIL_MS,
    GateField.REASON,
    GateField.BREAKER_OPENED_MS,
    GateField.BREAKER_FAILURES,
    GateField.BREAKER_PROBES,
    GateField.BREAKER_PROBE_AT_MS,
    GateField.APP_KEY_CLOSED_UNTIL_MS,
    GateField.APP_KEY_DETAIL,
)
"""The gate's fields ``status`` shows, in the order ``read_status`` reads them."""


PUMP_HEARTBEAT_S: Final = 5.0
"""How often a running pump reports (``workers.delivery.pump.HEARTBEAT_EVERY_S``, which a
test holds equal; not imported, so that ``status`` loads no delivery code)."""


def live_window_ms(settings: Settings) -> int:
    """How recently a pump must have reported for its worker process to count as live.

    A running pump, idle or not, reports every 5 s (``PUMP_HEARTBEAT_S``); at the end of
    a run it may go a request's timeout more without one while its last answers come in.
    A process without a pump gets a tick (and runs one) every ``FORWARDER_TICK_S``. Silence
    beyond both, or three ticks, means the process is gone.
    """
    run_end_s = 2 * PUMP_HEARTBEAT_S + settings.http_timeout_s + 1
    return int(max(15.0, 3 * settings.tick_s, run_end_s) * 1000)


def _int(value: bytes | None) -> int | None:
    return int(value) if value is not None else None


def _stat(stats: dict[bytes, bytes], field: StatsField) -> bytes | None:
    return stats.get(field.encode())


def read_status(
    client: redis.Redis, keys: RedisKeys, live_window_ms: int, replicas_wanted: int = 0
) -> Status:
    """Read every figure in one pipelined round trip.

    A worker process counts as live if it reported within ``live_window_ms``;
    ``replicas_wanted`` is ``FORWARDER_PUBLISH_REPLICAS`` (shown beside the replicas).
    """
    now_s, now_us = client.time()
    now_ms = int(now_s) * 1000 + int(now_us) // 1000
    pipe = client.pipeline(transaction=False)
    pipe.xlen(keys.ingest)
    pipe.exists(keys.ingest)
    pipe.zcount(keys.due, "-inf", now_ms)
    pipe.zcard(keys.due)
    pipe.zcard(keys.inflight)
    pipe.xlen(keys.dead)
    pipe.hgetall(keys.stats)
    pipe.hmget(keys.gate, GATE_FIELDS)
    pipe.zrangebyscore(keys.workers, now_ms - live_window_ms, "+inf")
    pipe.zcard(keys.app_key_waits)
    pipe.info("replication")
    (
        backlog,
        stream_exists,
        due_now,
        due_all,
        in_flight,
        dead,
        stats,
        gate,
        live,
        app_key_waiting,
        replication,
    ) = pipe.execute()
    pending = 0
    if stream_exists:
        try:
            pending = int(client.xpending(keys.ingest, CONSUMER_GROUP)["pending"])
        except redis.ResponseError:  # no consumer group yet: no worker has started
            pending = 0
    last_error = _stat(stats, StatsField.LAST_ERROR)
    return Status(
        backlog=int(backlog),
        unread=int(backlog) - pending,
        pending=pending,
        due_now=int(due_now),
        scheduled=int(due_all) - int(due_now),
        in_flight=int(in_flight),
        dead_letters=int(dead),
        delivered_total=_int(_stat(stats, StatsField.DELIVERED)) or 0,
        retries_total=_int(_stat(stats, StatsField.RETRIES)) or 0,
        last_success_ms=_int(_stat(stats, StatsField.LAST_SUCCESS_MS)),
        last_error=last_error.decode() if last_error is not None else None,
        last_error_ms=_int(_stat(stats, StatsField.LAST_ERROR_MS)),
        gate_closed_until_ms=_int(gate[0]),
        gate_reason=gate[1].decode() if gate[1] is not None else None,
        breaker_opened_ms=_int(gate[2]),
        breaker_failures=_int(gate[3]) or 0,
        breaker_probes=_int(gate[4]) or 0,
        breaker_next_probe_ms=_int(gate[5]) if gate[2] is not None else None,
        breaker_opened_total=_int(_stat(stats, StatsField.BREAKER_OPENED)) or 0,
        app_key_waiting=int(app_key_waiting),
        app_key_paused_until_ms=_int(gate[6]),
        app_key_detail=gate[7].decode(errors="replace") if gate[7] is not None else None,
        same_second_total=_int(_stat(stats, StatsField.SAME_SECOND)) or 0,
        live_workers=tuple(sorted(name.decode() for name in live)),
        now_ms=now_ms,
        replication=from_info(server_address(client), replication, replicas_wanted),
    )
