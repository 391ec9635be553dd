"""The spool file on its own: order, durability format, torn tails, bad records, the bound."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from forwarder import SpoolFullError
from forwarder._spool import DATA_FILE, OFFSET_FILE, Spool, decode_record, encode_record


def entry(number: int) -> dict[str, str]:
    return {"v": "1", "kind": "failure", "event": json.dumps({"id": f"incident-{number:012d}"})}


def drain_all(spool: Spool, batch: int = 500) -> list[dict[str, str]]:
    sent: list[dict[str, str]] = []
    report = spool.drain(sent.extend, batch=batch)
    assert report is not None
    return sent


@pytest.fixture
def spool(tmp_path: Path):
    opened = Spool(tmp_path / "spool", 1_048_576)
    yield opened
    opened.close()


def test_a_record_round_trips() -> None:
    """A record is its CRC, a space, its JSON and a newline; decoding gives the entry back."""
    line = encode_record(entry(1))
    assert line.endswith(b"\n")
    assert decode_record(line[:-1]) == entry(1)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "no checksum"),
        (b"zzzzzzzz {}", "not hex"),
        (b"00000000 {}", "checksum mismatch"),
        (encode_record(entry(1))[:-5], "checksum mismatch"),
        (b"%08x [1]" % __import__("zlib").crc32(b"[1]"), "not an object"),
        (b'%08x {"a": 1}' % __import__("zlib").crc32(b'{"a": 1}'), "not an object"),
        (b"%08x {nope" % __import__("zlib").crc32(b"{nope"), "not JSON"),
    ],
)
def test_bad_records_say_why(line: bytes, reason: str) -> None:
    """Each kind of bad line is refused with a reason, never an exception."""
    result = decode_record(line)
    assert isinstance(result, str)
    assert reason in result


def test_drain_sends_everything_in_order_and_empties_the_file(spool: Spool) -> None:
    """1,200 appends come back in order, in batches, and the file is emptied afterwards."""
    for number in range(1_200):
        spool.append([entry(number)])
    assert spool.waiting() == 1_200
    batches: list[int] = []

    def send(entries: list[dict[str, str]]) -> None:
        batches.append(len(entries))
        sent.extend(entries)

    sent: list[dict[str, str]] = []
    report = spool.drain(send, batch=500)
    assert report is not None
    assert (report.sent, report.skipped, report.waiting) == (1_200, 0, 0)
    assert sent == [entry(number) for number in range(1_200)]
    assert batches == [500, 500, 200]
    assert spool.is_empty()
    assert (spool.directory / DATA_FILE).stat().st_size == 0


def test_a_failed_send_keeps_its_batch_and_commits_the_earlier_ones(spool: Spool) -> None:
    """Redis failing on the second batch: the first is committed, the rest is sent next time."""
    spool.append([entry(number) for number in range(10)])
    calls = 0

    def send(entries: list[dict[str, str]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("away")

    with pytest.raises(ConnectionError):
        spool.drain(send, batch=4)
    assert spool.waiting() == 6
    assert drain_all(spool) == [entry(number) for number in range(4, 10)]


def test_a_torn_tail_is_skipped_with_a_warning(spool: Spool, caplog) -> None:
    """A file cut mid-record: the whole records are drained, the torn one is named and cut."""
    spool.append([entry(number) for number in range(5)])
    path = spool.directory / DATA_FILE
    os.truncate(path, path.stat().st_size - 7)
    assert spool.waiting() == 5  # four whole ones, and the torn one until it is skipped
    with caplog.at_level(logging.WARNING, "dora_forwarder.spool"):
        sent: list[dict[str, str]] = []
        report = spool.drain(sent.extend)
    assert sent == [entry(number) for number in range(4)]
    assert report is not None
    assert report.skipped == 1
    assert "torn record" in caplog.text
    assert spool.is_empty()


def test_an_append_after_a_torn_tail_is_not_glued_to_it(spool: Spool, caplog) -> None:
    """Appending after a crash mid-write: the new record survives, the torn one is skipped."""
    spool.append([entry(1), entry(2)])
    path = spool.directory / DATA_FILE
    os.truncate(path, path.stat().st_size - 3)
    spool.append([entry(3)])
    with caplog.at_level(logging.WARNING, "dora_forwarder.spool"):
        sent = drain_all(spool)
    assert sent == [entry(1), entry(3)]
    assert "bad record" in caplog.text


def test_bad_records_in_the_middle_are_skipped(tmp_path: Path, caplog) -> None:
    """Garbage lines between good records (one longer than a read): each skipped and named."""
    spool = Spool(tmp_path, 8 * 1_048_576)
    spool.append([entry(1)])
    with open(spool.directory / DATA_FILE, "ab") as file:
        file.write(b"garbage\n\x00\xff\xfe\n" + b"x" * 3_000_000 + b"\n")
    spool.append([entry(2)])
    with caplog.at_level(logging.WARNING, "dora_forwarder.spool"):
        sent = drain_all(spool)
    spool.close()
    assert sent == [entry(1), entry(2)]
    assert caplog.text.count("skipped") == 3


def test_a_full_spool_refuses_and_writes_nothing(tmp_path: Path) -> None:
    """Past max_bytes: SpoolFullError naming the limit, and not a byte of the batch on disk."""
    record_bytes = len(encode_record(entry(0)))
    spool = Spool(tmp_path, record_bytes * 3)
    spool.append([entry(0), entry(1)])
    size = (tmp_path / DATA_FILE).stat().st_size
    with pytest.raises(SpoolFullError, match=r"full .*spool_max_bytes"):
        spool.append([entry(2), entry(3)])
    assert (tmp_path / DATA_FILE).stat().st_size == size
    spool.append([entry(2)])  # what fits still goes in
    assert drain_all(spool) == [entry(0), entry(1), entry(2)]
    spool.close()


def test_an_unreadable_offset_drains_from_the_start(spool: Spool, caplog) -> None:
    """A damaged offset file repeats events (harmless: ids fold) rather than losing any."""
    spool.append([entry(1), entry(2)])
    (spool.directory / OFFSET_FILE).write_text("rubbish")
    with caplog.at_level(logging.WARNING, "dora_forwarder.spool"):
        assert drain_all(spool) == [entry(1), entry(2)]
    assert "unreadable offset" in caplog.text


def test_a_second_drainer_steps_aside(spool: Spool, tmp_path: Path) -> None:
    """While one process drains, another's drain returns None instead of sending twice."""
    spool.append([entry(1)])
    other = Spool(spool.directory, 1_048_576)
    seen: list[object] = []

    def send(entries: list[dict[str, str]]) -> None:
        seen.append(other.drain(lambda _: None))

    spool.drain(send)
    assert seen == [None]
    other.close()


def _append_many(directory: str, writer: int, count: int) -> None:
    spool = Spool(directory, 64 * 1_048_576)
    for number in range(count):
        spool.append([{"writer": str(writer), "n": str(number)}])
    spool.close()


def test_two_processes_appending_to_one_directory_interleave_whole_records(tmp_path: Path) -> None:
    """Two writers, 2,000 appends each: every record whole, each writer's order kept."""
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_append_many, args=(str(tmp_path), writer, 2_000))
        for writer in (1, 2)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
        assert process.exitcode == 0
    spool = Spool(tmp_path, 64 * 1_048_576)
    sent = drain_all(spool)
    spool.close()
    assert len(sent) == 4_000
    for writer in ("1", "2"):
        numbers = [int(record["n"]) for record in sent if record["writer"] == writer]
        assert numbers == list(range(2_000))
