"""The stop flag: raised in one process, seen at once by forked ones and by event loops."""

from __future__ import annotations

import asyncio
import os
import select

from workers.delivery.stop_flag import StopFlag


def test_a_new_flag_is_down_and_a_raised_one_stays_up() -> None:
    flag = StopFlag()
    assert not flag.is_set()
    flag.set()
    flag.set()  # a second raise changes nothing
    assert flag.is_set()
    assert flag.is_set(), "seeing it does not lower it"


def test_a_child_forked_before_the_raise_sees_it() -> None:
    """The main process raises it after the pool forked: the pool process sees it."""
    flag = StopFlag()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        # Wait for the raise without polling: the descriptor turns readable.
        select.select([flag.fileno()], [], [], 10)
        os.write(write_fd, b"1" if flag.is_set() else b"0")
        os._exit(0)
    os.close(write_fd)
    flag.set()
    answer = os.read(read_fd, 1)
    os.waitpid(child, 0)
    os.close(read_fd)
    assert answer == b"1"


def test_an_event_loop_wakes_on_the_raise() -> None:
    """A loop watching the descriptor is woken by the raise (as a pump's run is)."""
    flag = StopFlag()

    async def wait_for_raise() -> bool:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        loop.add_reader(flag.fileno(), woken.set)
        try:
            loop.call_later(0.05, flag.set)
            await asyncio.wait_for(woken.wait(), timeout=5)
        finally:
            loop.remove_reader(flag.fileno())
        return woken.is_set()

    assert asyncio.run(wait_for_raise())
