"""Folding what a worker reads from the stream, so that no one entry can hold up the rest.

An entry could hold up ingest in two ways, and neither is allowed (I7). Its fold could
fail (the script errs on it: state of the wrong type under its key, a value Redis refuses):
the batch is then folded entry by entry, and an entry whose own fold fails becomes a dead
letter naming the error. And reclaiming could always start at it: the scan of the pending
list goes on from where the last one stopped (XAUTOCLAIM's cursor), round and round, so an
entry that fails for any reason is retried only once every entry after it had its turn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from redis.exceptions import ResponseError

from forwarder.entry import RawFields
from workers.delivery.fold import FoldPlan, plan_fold, poison_plan
from workers.delivery.poison import PoisonEntry
from workers.delivery.store import Store

log = logging.getLogger("dora_forwarder.intake")

Entry = tuple[bytes, dict[bytes, bytes]]

# Errors that say Redis as a whole refuses writes now, not that this entry is bad: the
# entries stay pending and are folded once Redis takes writes again.
_REDIS_WIDE: Final = frozenset(
    {
        "BADKEY",  # fold.lua: a key every fold writes holds the wrong type
        "BUSY",
        "CLUSTERDOWN",
        "LOADING",
        "MASTERDOWN",
        "MISCONF",
        "NOPERM",
        "NOREPLICAS",
        "NOSCRIPT",
        "OOM",
        "READONLY",
        "TRYAGAIN",
    }
)


def is_redis_wide(exc: ResponseError) -> bool:
    """Whether ``exc`` is about Redis' state (memory, role, loading), not about the data."""
    first = str(exc).split(" ", 1)[0]
    return first in _REDIS_WIDE


@dataclass(frozen=True, slots=True)
class Folded:
    """What folding some entries did: how many were acknowledged, dead-lettered, changed."""

    entries: int
    poison: tuple[PoisonEntry, ...]
    changed: int


class Intake:
    """One process' folding of stream entries; keeps the reclaim scan's place between runs."""

    def __init__(self, store: Store, *, retention_ms: int, orphan_wait_ms: int) -> None:
        self._store = store
        self._retention_ms = retention_ms
        self._orphan_wait_ms = orphan_wait_ms
        self._reclaim_from = "0-0"

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """The next page of entries left pending by others for ``min_idle_ms``."""
        start = self._reclaim_from
        # The place moves on before the entries are folded: if folding them fails, the
        # next scan starts after them, and they come round again at the end of the list.
        self._reclaim_from, entries = await self._store.reclaim(consumer, min_idle_ms, count, start)
        return entries

    @property
    def reclaim_went_round(self) -> bool:
        """Whether the last reclaim reached the end of the pending list."""
        return self._reclaim_from == "0-0"

    async def fold(
        self, entries: Sequence[tuple[bytes | str, RawFields]], *, now_ms: int | None = None
    ) -> Folded:
        """Fold ``entries`` and acknowledge them; every one is folded or dead-lettered.

        Raises only what says Redis itself cannot take the writes now (unreachable, out of
        memory, a replica ...): the entries then stay pending, to be reclaimed. ``now_ms``
        pins the scripts' clock (tests); None is Redis' clock.
        """
        plan = plan_fold(entries)
        try:
            result = await self._fold(plan, now_ms)
        # fold.lua checks what could fail before its first write (key types, numbers), so a
        # script that failed applied nothing: folding the entries again one by one is exact.
        except ResponseError as exc:
            if is_redis_wide(exc):
                raise
            log.warning(
                "folding a batch of %d entries failed (%s); folding them one at a time",
                len(entries),
                exc,
            )
        else:
            return Folded(len(plan.ack_ids), plan.poison, result)
        return await self._one_by_one(entries, now_ms)

    async def _one_by_one(
        self, entries: Sequence[tuple[bytes | str, RawFields]], now_ms: int | None
    ) -> Folded:
        acknowledged, changed = 0, 0
        poison: list[PoisonEntry] = []
        for entry_id, fields in entries:
            plan = plan_fold([(entry_id, fields)])
            try:
                changed += await self._fold(plan, now_ms)
            except ResponseError as exc:
                if is_redis_wide(exc):
                    raise
                # Raises if Redis refuses even the dead letter: then it is not this entry.
                plan = poison_plan(entry_id, fields, f"the fold script failed on it: {exc}")
                await self._fold(plan, now_ms)
            acknowledged += len(plan.ack_ids)
            poison.extend(plan.poison)
        return Folded(acknowledged, tuple(poison), changed)

    async def _fold(self, plan: FoldPlan, now_ms: int | None) -> int:
        result = await self._store.fold(
            plan,
            retention_ms=self._retention_ms,
            orphan_wait_ms=self._orphan_wait_ms,
            now_ms=now_ms,
        )
        return result.changed
