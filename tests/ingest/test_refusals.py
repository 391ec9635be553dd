"""Refused requests logged at most once per reason per interval, each line with its count."""

from __future__ import annotations

import asyncio
import logging

import pytest

from workers.ingest.refusals import RefusalLine, RefusalLog, RefusalTally

WRONG = "a key that is not one of FORWARDER_INGEST_KEYS"
NO_KEY = "no DD-API-KEY header"


def test_first_refusal_is_written_at_once_and_later_ones_held_for_the_interval() -> None:
    """One line at the first refusal; the rest of the interval is held and counted."""
    tally = RefusalTally(interval_s=60)
    assert tally.record(WRONG, "POST /a from 10.0.0.1", now=100.0) == RefusalLine(
        WRONG, 1, 0.0, "POST /a from 10.0.0.1"
    )
    assert tally.record(WRONG, "POST /a from 10.0.0.2", now=101.0) is None
    assert tally.record(WRONG, "POST /a from 10.0.0.3", now=159.9) is None
    assert tally.due_at(WRONG) == 160.0
    assert tally.record(WRONG, "POST /a from 10.0.0.4", now=160.0) == RefusalLine(
        WRONG, 3, 59.0, "POST /a from 10.0.0.4"
    )
    assert tally.due_at(WRONG) is None


def test_reasons_are_counted_apart() -> None:
    """Each reason has its own interval and count."""
    tally = RefusalTally(interval_s=60)
    assert tally.record(WRONG, "x", now=0.0) is not None
    assert tally.record(NO_KEY, "y", now=1.0) is not None
    assert tally.record(WRONG, "x", now=2.0) is None
    assert tally.held_reasons() == [WRONG]
    assert tally.flush(NO_KEY, now=3.0) is None
    assert tally.flush(WRONG, now=3.0) == RefusalLine(WRONG, 1, 1.0, "x")
    assert tally.held_reasons() == []


def test_a_quiet_interval_lets_the_next_refusal_through_at_once() -> None:
    """After an interval without refusals, the next one is written at once."""
    tally = RefusalTally(interval_s=10)
    assert tally.record(WRONG, "x", now=0.0) is not None
    assert tally.record(WRONG, "x", now=25.0) == RefusalLine(WRONG, 1, 0.0, "x")


def test_flush_writes_what_is_held(caplog: pytest.LogCaptureFixture) -> None:
    """Outside an event loop nothing is scheduled; ``flush`` writes the held counts."""
    now = [0.0]
    log = RefusalLog(logging.getLogger("test.refusals"), 60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.refusals"):
        for _ in range(5):
            log.refused(WRONG, "POST /a from 10.0.0.1")
        now[0] = 2.0
        log.flush()
        log.flush()  # nothing more held: nothing more written
    assert [record.getMessage() for record in caplog.records] == [
        f"refused 1 request(s) in 0.0 s: {WRONG}; latest: POST /a from 10.0.0.1",
        f"refused 4 request(s) in 2.0 s: {WRONG}; latest: POST /a from 10.0.0.1",
    ]
    assert [getattr(record, "refused", None) for record in caplog.records] == [1, 4]


class _Lines(logging.Handler):
    """Collects records; ``second`` is set once two have come."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.second = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if len(self.records) >= 2:
            self.second.set()


def test_held_counts_are_written_when_their_interval_ends() -> None:
    """In the server's loop the count held back is written once its interval is over."""
    logger = logging.getLogger("test.refusals.loop")
    lines = _Lines()
    logger.addHandler(lines)

    async def refuse_then_wait() -> None:
        log = RefusalLog(logger, 0.2)
        for _ in range(7):
            log.refused(WRONG, "POST /a from 10.0.0.1")
        await asyncio.wait_for(lines.second.wait(), timeout=10)

    try:
        asyncio.run(refuse_then_wait())
    finally:
        logger.removeHandler(lines)
    assert [getattr(record, "refused", None) for record in lines.records] == [1, 6]
