"""What a running forwarder costs its machine: CPU seconds and memory of a process group.

Read from /proc, so it counts every process of a worker (main, pool processes, embedded beat)
and nothing else: each system under test runs in a process group of its own.

- CPU: user + system time of each live member (``/proc/PID/stat`` fields 14 and 15), plus
  what members already reaped (fields 16 and 17), so a pool process that was replaced
  still counts.
- Memory: PSS summed (``/proc/PID/smaps_rollup``), the fair share of pages the processes
  share (a forked pool shares most of its parent's), and RSS summed beside it, which counts
  every shared page once per process.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/PID/stat`` (after the command name), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_members(group: int) -> list[int]:
    """Every live process whose process group is ``group``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[2]) == group:
                members.append(int(entry.name))
    return members


def cpu_seconds(group: int) -> float:
    """User + system CPU seconds of the group so far, reaped children included."""
    total = 0
    for pid in group_members(group):
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(value) for value in fields[11:15])
    return total / TICKS_PER_S


@dataclass(frozen=True, slots=True)
class Memory:
    """A process group's memory, summed over its processes, in MiB."""

    pss_mb: float
    rss_mb: float
    processes: int


def memory(group: int) -> Memory:
    """PSS and RSS of every process of the group, summed."""
    pss = rss = count = 0
    for pid in group_members(group):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # exited meanwhile
        values = {
            parts[0].rstrip(":"): int(parts[1])
            for parts in (line.split() for line in rollup.splitlines()[1:])
            if len(parts) >= 2 and parts[1].isdigit()
        }
        pss += values.get("Pss", 0)
        rss += values.get("Rss", 0)
        count += 1
    return Memory(pss_mb=pss / 1024, rss_mb=rss / 1024, processes=count)


def idle_cpu_share(group: int, seconds: float) -> float:
    """The share of one core the group used over ``seconds`` of wall time."""
    before, started = cpu_seconds(group), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(group) - before) / (time.monotonic() - started)
