"""Review of issue 14's spool: events acknowledged as spooled must reach the drain."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import redis

from forwarder import Publisher
from forwarder._spool import Spool, encode_record
from forwarder.entry import encode_entry, to_event


def entry(number: int) -> dict[str, str]:
    return {"v": "1", "kind": "failure", "event": json.dumps({"id": f"incident-{number:012d}"})}


def drain_all(spool: Spool) -> list[dict[str, str]]:
    sent: list[dict[str, str]] = []
    report = spool.drain(sent.extend)
    assert report is not None
    return sent


class Crash(Exception):
    """Stands for the process dying at this point."""


def test_a_crash_while_emptying_the_drained_file_loses_no_later_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full drain empties the file, then resets the offset. Dying between the two used to
    leave a stale offset past the end: the next run's appends were silently cut off."""
    directory = tmp_path / "spool"
    first = Spool(directory, 1_048_576)
    first.append([entry(n) for n in range(3)])
    real_write_offset = Spool._write_offset

    def dies_on_reset(self: Spool, offset: int) -> None:
        if offset == 0:
            raise Crash
        real_write_offset(self, offset)

    monkeypatch.setattr(Spool, "_write_offset", dies_on_reset)
    with pytest.raises(Crash):
        first.drain(lambda entries: None)
    monkeypatch.undo()
    first.close()

    restarted = Spool(directory, 1_048_576)
    try:
        restarted.append([entry(10), entry(11)])  # fewer bytes than the stale offset
        assert not restarted.is_empty()
        sent = drain_all(restarted)
        assert sent[-2:] == [entry(10), entry(11)]  # earlier ones again: harmless repeats
    finally:
        restarted.close()


def test_a_valid_event_larger_than_a_read_chunk_is_drained(tmp_path: Path) -> None:
    """A valid incident (100 services of 1,000 emoji) spools as a 1.2 MB record: it was
    acknowledged as spooled, so the drain must send it, not skip it as an oversized line."""
    event = to_event(
        {
            "id": "incident-000000000001",
            "services": ["\U0001f600" * 1_000] * 100,
            "started_at": 1_700_000_000_000_000_000,
        }
    )
    big = {str(name): str(value) for name, value in encode_entry(event).items()}
    assert len(encode_record(big)) > 1_048_576
    spool = Spool(tmp_path / "spool", 8 * 1_048_576)
    try:
        spool.append([entry(1), big, entry(2)])
        assert drain_all(spool) == [entry(1), big, entry(2)]
        assert spool.skipped_total == 0
    finally:
        spool.close()


def test_a_publisher_on_a_given_client_refuses_a_wait_its_socket_would_cut() -> None:
    """As ``from_url`` does: else every WAIT of a lagging replica ends in a socket timeout,
    which reads as "Redis away", so the events, stored already, are spooled and sent again."""
    client = redis.Redis.from_url("redis://127.0.0.1:1/15", socket_timeout=0.2)
    try:
        with pytest.raises(ValueError, match="must be less than the socket timeout"):
            Publisher(client, replicas=1, replicas_timeout_s=0.5)
        Publisher(client, replicas=1, replicas_timeout_s=0.1)
        Publisher(client, replicas=0, replicas_timeout_s=0.5)
    finally:
        client.close()


def test_a_data_file_emptied_by_hand_does_not_hide_later_appends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator deletes spool.jsonl but leaves spool.offset: the offset is past the end
    of the new file, which is then drained from its start, with a warning saying why."""
    directory = tmp_path / "spool"
    first = Spool(directory, 1_048_576)
    first.append([entry(n) for n in range(5)])
    assert len(drain_all_but_keep_offset(first)) == 5
    first.close()
    (directory / "spool.jsonl").unlink()

    restarted = Spool(directory, 1_048_576)
    try:
        restarted.append([entry(20)])
        assert not restarted.is_empty()
        assert drain_all(restarted) == [entry(20)]
    finally:
        restarted.close()
    assert any("emptied or replaced by hand" in r.getMessage() for r in caplog.records)


def drain_all_but_keep_offset(spool: Spool) -> list[dict[str, str]]:
    """Send the waiting records and record the offset, without the final emptying (as a
    drain that stopped after its last batch leaves it)."""
    sent: list[dict[str, str]] = []
    stop = threading.Event()

    def send(entries: list[dict[str, str]]) -> None:
        sent.extend(entries)
        stop.set()  # stop between batches: the offset is written, the file not emptied

    spool.drain(send, stop=stop)
    return sent
