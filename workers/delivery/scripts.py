"""The Lua scripts' interface, Python side: each script's KEYS, and its ARGV as a typed record.

A script reads its arguments in named groups, for example in ``forget_consumers.lua``::

    local group, keep, idle_ms = unpack(ARGV, 1, 3)

and the record (``ForgetConsumersArgs``) has the same fields in the same order. ``argv``
turns any record into ARGV the one way every script reads it: the record's fields in order,
a tuple field as its count (``n_<field>`` in Lua) in its place, then each tuple's items (a
record item the same way, recursively). So a change to a script's arguments is made in its
record alone, and ``tests/delivery/test_script_contract.py`` holds every ``unpack`` line of
the Lua to ``layout`` of its record, and the script's KEYS to ``Script.keys``.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from forwarder.protocol import RedisKeys
from workers.delivery.fold import IncidentUpdate
from workers.delivery.poison import PoisonEntry
from workers.delivery.records import Settlement

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Arg = str | int | float
"""One ARGV value as redis-py sends it."""

A = TypeVar("A", bound="DataclassInstance")


@dataclass(frozen=True, slots=True)
class ClaimArgs:
    """ARGV of ``claim.lua``."""

    prefix: str
    """Incident key prefix (``RedisKeys.incident_prefix``)."""
    limit: int
    lease_ms: int
    token: str
    probe_ms: int
    ceiling_per_s: float
    """The fleet-wide ceiling in requests per second; 0: none."""
    now_ms: int | None
    """None: Redis' clock (tests pin it)."""
    breaker_probe_ms: int = 1_000
    """While the circuit breaker is open: the wait after the first probe (doubles each time)."""
    breaker_probe_max_ms: int = 30_000
    """The longest wait between two probes."""


@dataclass(frozen=True, slots=True)
class SettleArgs:
    """ARGV of ``settle.lua``: the gate's update, then one ``Settlement`` per outcome."""

    prefix: str
    token: str
    now_ms: int | None
    retention_ms: int
    """How long a quiet state (delivered or dead-lettered) is kept."""
    finished_prefix: str
    """Prefix of the finish records (``RedisKeys.finished_prefix``)."""
    finished_retention_ms: int
    """How long the record of a delivered finish is kept."""
    close_ms: int
    close_reason: str
    close_detail: str
    budget_limit: int
    """0: no rate-limit budget seen."""
    remaining: int
    reset_ms: int
    period_ms: int
    unlimited: bool
    """A 2xx came without rate-limit headers."""
    answered: bool
    """Some attempt finished: a probe is over."""
    outages: int
    """Outage answers in the batch (``breaker.BreakerUpdate``)."""
    healthy: bool
    """Some answer says the API is up: the circuit breaker closes."""
    breaker_failures: int
    """Outage answers in a row, fleet-wide, that open the breaker."""
    breaker_probe_ms: int
    """From opening to the first probe."""
    app_key_close_ms: int
    """Pause PATCH and DELETE fleet-wide this long (Datadog refused the application key)."""
    app_key_detail: str
    """Why, for people (``status``)."""
    app_key_works: bool
    """A PATCH or DELETE got past the application key: its pause (and probe) is over."""
    settlements: tuple[Settlement, ...]


@dataclass(frozen=True, slots=True)
class FoldArgs:
    """ARGV of ``fold.lua``; KEYS carry one incident hash per update, in the same order."""

    group: str
    retention_ms: int
    """How long a state that needs no request (a late copy of a delivered finish) is kept."""
    orphan_wait_ms: int
    finished_prefix: str
    """Prefix of the finish records (``RedisKeys.finished_prefix``)."""
    second_prefix: str
    """Prefix of the seconds deployments hold (``RedisKeys.second_prefix``)."""
    version_prefix: str
    """Prefix of the deployment each service + env + version names last
    (``RedisKeys.version_prefix``)."""
    now_ms: int | None
    """None: Redis' clock (tests pin it)."""
    ack_ids: tuple[str, ...]
    poison: tuple[PoisonEntry, ...]
    updates: tuple[IncidentUpdate, ...]


@dataclass(frozen=True, slots=True)
class HeartbeatArgs:
    """ARGV of ``heartbeat.lua``."""

    consumer: str
    forget_after_ms: int


@dataclass(frozen=True, slots=True)
class LiftAuthPauseArgs:
    """ARGV of ``lift_auth_pause.lua``."""

    auth_reason: str
    """The gate reason a refused key closes it with."""
    now_ms: int | None = None
    """Redis' clock when None; tests pin it."""


@dataclass(frozen=True, slots=True)
class ForgetConsumersArgs:
    """ARGV of ``forget_consumers.lua``."""

    group: str
    keep: str
    """The caller's own consumer name: never forgotten."""
    idle_ms: int


@dataclass(frozen=True, slots=True)
class TickArgs:
    """ARGV of ``tick.lua``."""

    sent_ms: int
    """When the tick was sent (ms, Redis' clock)."""
    max_age_ms: int
    """The oldest tick that still runs a pump."""
    now_ms: int | None
    """None: Redis' clock (tests pin it)."""


@dataclass(frozen=True, slots=True)
class Script(Generic[A]):
    """One Lua script: its file, the keys it takes (``RedisKeys`` attributes) and its ARGV."""

    file: str
    keys: tuple[str, ...]
    """Names of ``RedisKeys`` attributes, in KEYS order (``<name>_key`` in the Lua)."""
    args: type[A]
    incident_keys: bool = False
    """KEYS go on with one incident hash per update (``fold.lua``)."""

    def text(self) -> str:
        """The script's source, after the prelude its helpers (clock, ms formatting) come from."""
        folder = resources.files("workers.delivery").joinpath("lua")
        return folder.joinpath("_prelude.lua").read_text() + folder.joinpath(self.file).read_text()

    def call(
        self, keys: RedisKeys, args: A, incident_ids: Sequence[str] = ()
    ) -> tuple[list[str], list[Arg]]:
        """KEYS and ARGV of one run, ready for redis-py's ``Script.__call__``."""
        names = [str(getattr(keys, name)) for name in self.keys]
        names.extend(keys.incident(incident_id) for incident_id in incident_ids)
        return names, argv(args)


CLAIM: Final = Script(
    "claim.lua", ("due", "inflight", "dead", "stats", "gate", "app_key_waits"), ClaimArgs
)
SETTLE: Final = Script(
    "settle.lua",
    ("due", "inflight", "dead", "stats", "gate", "app_key_waits", "app_key_probe"),
    SettleArgs,
)
FOLD: Final = Script(
    "fold.lua", ("ingest", "due", "inflight", "dead", "stats"), FoldArgs, incident_keys=True
)
HEARTBEAT: Final = Script("heartbeat.lua", ("workers",), HeartbeatArgs)
LIFT_AUTH_PAUSE: Final = Script("lift_auth_pause.lua", ("gate",), LiftAuthPauseArgs)
FORGET_CONSUMERS: Final = Script("forget_consumers.lua", ("ingest",), ForgetConsumersArgs)
TICK: Final = Script("tick.lua", ("stats",), TickArgs)

SCRIPTS: Final[tuple[Script[typing.Any], ...]] = (
    CLAIM,
    SETTLE,
    FOLD,
    HEARTBEAT,
    LIFT_AUTH_PAUSE,
    FORGET_CONSUMERS,
    TICK,
)
"""Every script the workers run."""


def _value(value: object) -> Arg:
    if isinstance(value, bool):  # before int: bool is an int
        return int(value)
    if value is None:
        return ""  # the scripts read '' as "not given" (now_ms: Redis' clock)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, str | int | float):
        return value
    raise TypeError(f"a script argument must be str, int, float, bool or None, not {value!r}")


@functools.cache
def _field_names(record_type: type[DataclassInstance]) -> tuple[str, ...]:
    # dataclasses.fields() builds its answer on every call: once per type is enough.
    return tuple(field.name for field in dataclasses.fields(record_type))


def argv(record: DataclassInstance) -> list[Arg]:
    """ARGV for ``record``: its fields in order (a tuple as its count), then tuples' items."""
    head: list[Arg] = []
    tail: list[Arg] = []
    for name in _field_names(type(record)):
        value = getattr(record, name)
        if isinstance(value, tuple):
            head.append(len(value))
            for item in value:
                if dataclasses.is_dataclass(item) and not isinstance(item, type):
                    tail.extend(argv(item))
                else:
                    tail.append(_value(item))
        elif type(value) is str or type(value) is int:  # not bool, not an enum
            head.append(value)  # the common case, without _value's checks
        else:
            head.append(_value(value))
    return head + tail


def layout(record_type: type[DataclassInstance]) -> list[tuple[str, ...]]:
    """The groups ``argv`` makes of a record type, as its Lua ``unpack`` lines name them.

    The record's own group (a tuple field as ``n_<field>``), then, depth first, the group of
    each record type its tuples hold. A tuple of plain values has no group: the Lua reads it
    one by one.
    """
    hints = typing.get_type_hints(record_type)
    own: list[str] = []
    nested: list[tuple[str, ...]] = []
    for field in dataclasses.fields(record_type):
        hint = hints[field.name]
        if typing.get_origin(hint) is tuple:
            own.append(f"n_{field.name}")
            item = typing.get_args(hint)[0]
            if isinstance(item, type) and dataclasses.is_dataclass(item):
                nested.extend(layout(item))
        else:
            own.append(field.name)
    return [tuple(own), *nested]
