"""Child processes that ``run`` owns (the embedded Redis, ``serve``): they stop with it."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
from typing import Final

_PR_SET_PDEATHSIG: Final = 1


def stop_with_parent() -> None:
    """In the child, before exec: SIGTERM (a clean shutdown) when the parent dies, even by kill.

    For ``preexec_fn`` on Linux, started before any thread exists.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it has not exited within ``timeout_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)
