"""A flag that one process raises and every process forked from it can wait on: a pipe.

The worker's main process raises it on a warm shutdown; each pool process' pump is woken
by its event loop the moment the pipe turns readable, instead of polling a shared flag
(20 wake-ups a second per process, the largest part of an idle worker's CPU).
"""

from __future__ import annotations

import contextlib
import os
import select


class StopFlag:
    """Raised once (``set``), seen by every process that inherited it (``is_set``, ``fileno``).

    Nobody reads the byte ``set`` writes, so the pipe stays readable for every process and
    every event loop watching it: one raise wakes them all.
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._raised_here = False

    def set(self) -> None:
        """Raise the flag (safe from a signal handler; a second call does nothing)."""
        if self._raised_here:
            return
        self._raised_here = True
        # A full pipe already holds bytes: the flag is raised either way.
        with contextlib.suppress(BlockingIOError):
            os.write(self._write_fd, b"!")

    def is_set(self) -> bool:
        """Whether any process raised the flag."""
        readable, _, _ = select.select([self._read_fd], [], [], 0)
        return bool(readable)

    def fileno(self) -> int:
        """The descriptor that turns readable once the flag is raised (for ``add_reader``)."""
        return self._read_fd
