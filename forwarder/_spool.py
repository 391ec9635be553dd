"""The producer spool: a local append-only file of stream entries waiting for Redis.

One directory holds one spool, shared by every producer process that names it::

    spool.jsonl   one record a line: 8 hex digits of CRC-32, a space, the entry as JSON
    spool.offset  how far the spool has been drained (bytes), replaced atomically
    append.lock   flock'ed around every append, and around the drainer's reads and commits
    drain.lock    flock'ed by the one process draining (others skip; a dead holder frees it)

An append is written and fsynced under ``append.lock`` before it returns, so a record is
either whole on disk or was never acknowledged. A torn record (a crash mid-write, a disk
that lost a tail) is a line that is not complete or whose CRC does not match: the drainer
skips it with a WARNING, and an appender that finds a torn tail ends it with a newline
first, so the next record is never glued to it. Drained bytes are committed after Redis took
them: a crash in between sends them again, which is harmless (an event's id folds into one
state). The file is emptied when everything in it has been drained.

POSIX only (``fcntl``): the Publisher imports this module only when given a spool.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from forwarder._errors import SpoolFullError
from forwarder._published import DrainReport

log = logging.getLogger("dora_forwarder.spool")

DRAIN_BATCH: Final = 500
"""Records sent to Redis per round trip while draining."""
_READ_CHUNK_BYTES: Final = 1_048_576
_CRC_DIGITS: Final = 8
DATA_FILE: Final = "spool.jsonl"
OFFSET_FILE: Final = "spool.offset"

Entry = dict[str, str]
"""A stream entry's fields, as ``encode_entry`` makes them."""


def encode_record(entry: Mapping[str, str]) -> bytes:
    """One spool line: CRC-32 of the JSON (8 hex digits), a space, the JSON, a newline."""
    payload = json.dumps(dict(entry), separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_record(line: bytes) -> Entry | str:
    """The entry of one complete line (without its newline), or why it is unusable."""
    crc, _, payload = line.partition(b" ")
    if len(crc) != _CRC_DIGITS or not payload:
        return "not a spool record (no checksum)"
    try:
        expected = int(crc, 16)
    except ValueError:
        return "not a spool record (checksum is not hex)"
    if zlib.crc32(payload) != expected:
        return "checksum mismatch (torn or damaged)"
    try:
        entry = json.loads(payload)
    except ValueError:
        return "not JSON"
    if not isinstance(entry, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in entry.items()
    ):
        return "not an object of text fields"
    return entry


class Spool:
    """The spool in ``directory`` (made if missing), refusing appends past ``max_bytes``."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("spool_max_bytes must be at least 1")
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._data = self.directory / DATA_FILE
        self._offset = self.directory / OFFSET_FILE
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._data_fd = os.open(self._data, flags, 0o600)
        self._append_fd = os.open(self.directory / "append.lock", flags, 0o600)
        self._drain_fd = os.open(self.directory / "drain.lock", flags, 0o600)
        _fsync_directory(self.directory)
        # flock excludes other processes; these exclude this process' other threads.
        self._append_lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._closed = False
        self.skipped_total = 0
        """Torn or bad records this object's drains skipped (each with a WARNING)."""

    def append(self, entries: Sequence[Mapping[str, str]]) -> None:
        """Write ``entries`` in order and fsync them; whole, or not at all.

        Raises ``SpoolFullError`` if the file would grow past ``max_bytes`` (nothing
        written), ``OSError`` if the disk refuses (the file is cut back to where it was).
        """
        data = b"".join(encode_record(entry) for entry in entries)
        with self._appending():
            size = os.fstat(self._data_fd).st_size
            if size and os.pread(self._data_fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # end a torn tail, so it stays one bad line of its own
            if size + len(data) > self.max_bytes:
                raise SpoolFullError(
                    f"the spool in {self.directory} is full ({size} bytes of at most "
                    f"{self.max_bytes}; spool_max_bytes / FORWARDER_SPOOL_MAX_BYTES): "
                    f"{len(entries)} event(s) not enqueued, nor spooled"
                )
            try:
                _write_all(self._data_fd, data)
                os.fsync(self._data_fd)
            except OSError:
                os.ftruncate(self._data_fd, size)
                raise

    def waiting(self) -> int:
        """Records not yet drained (torn or bad ones included until the drainer skips them)."""
        with self._appending():
            start, end = self._read_offset(), os.fstat(self._data_fd).st_size
            count, position = 0, start
            while position < end:
                chunk = os.pread(self._data_fd, min(_READ_CHUNK_BYTES, end - position), position)
                count += chunk.count(b"\n")
                position += len(chunk)
            torn = end > start and os.pread(self._data_fd, 1, end - 1) != b"\n"
            return count + torn

    def is_empty(self) -> bool:
        """Nothing waits (two small reads: the file's size and the offset)."""
        with self._appending():
            return os.fstat(self._data_fd).st_size <= self._read_offset()

    def drain(
        self,
        send: Callable[[list[Entry]], None],
        *,
        batch: int = DRAIN_BATCH,
        stop: threading.Event | None = None,
    ) -> DrainReport | None:
        """Send every waiting record in order, ``batch`` at a time, until none is left.

        ``send`` raising stops the drain: what it was given stays in the spool and the error
        propagates (what earlier batches sent is committed); ``stop`` set ends it between
        two batches. None when another process is draining this spool already.
        """
        with self._drain_lock:
            try:
                fcntl.flock(self._drain_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            try:
                return self._drain_locked(send, batch, stop)
            finally:
                fcntl.flock(self._drain_fd, fcntl.LOCK_UN)

    def _drain_locked(
        self, send: Callable[[list[Entry]], None], batch: int, stop: threading.Event | None
    ) -> DrainReport:
        sent = skipped = 0
        while stop is None or not stop.is_set():
            with self._appending():
                start = self._read_offset()
                entries, end, bad = self._read_batch(start, batch)
                if not entries and end == start:
                    if start:  # all drained: empty the file for the next outage
                        # The offset first: dying in between then sends it all again
                        # (harmless), where a stale offset past the end would hide appends.
                        self._write_offset(0)
                        os.ftruncate(self._data_fd, 0)
                        os.fsync(self._data_fd)
                    return DrainReport(sent=sent, skipped=skipped)
            skipped += bad
            self.skipped_total += bad
            if entries:
                send(entries)  # outside append.lock: producers keep spooling meanwhile
                sent += len(entries)
            with self._appending():
                self._write_offset(end)
        return DrainReport(sent=sent, skipped=skipped, waiting=self.waiting())

    def _read_batch(self, start: int, batch: int) -> tuple[list[Entry], int, int]:
        """Up to ``batch`` good records from ``start``: them, where they end, bad ones seen."""
        size = os.fstat(self._data_fd).st_size
        entries: list[Entry] = []
        bad = 0
        position = start
        while position < size and len(entries) < batch:
            chunk = self._read_to_newline(position, size)
            lines = chunk.split(b"\n")
            tail = lines.pop()  # after the last newline: a partial line, or b""
            if not lines:  # no newline at all
                if position + len(chunk) < size:  # a line longer than the bound: no record is
                    bad += 1
                    log.warning(
                        "spool %s: skipped an oversized line at byte %d", self._data, position
                    )
                    position = self._skip_line(position, size)
                    continue
                # The file ends mid-record and no append is under way (we hold the lock):
                # a torn tail, never acknowledged. Cut it off.
                bad += 1
                log.warning(
                    "spool %s: skipped a torn record at its end (%d bytes at byte %d)",
                    self._data,
                    len(tail),
                    position,
                )
                os.ftruncate(self._data_fd, position)
                os.fsync(self._data_fd)
                break
            for line in lines:
                if len(entries) >= batch:
                    break
                where = position
                position += len(line) + 1
                record = decode_record(line)
                if isinstance(record, str):
                    if line:  # an empty line is what ended a torn tail: nothing to say twice
                        bad += 1
                        log.warning(
                            "spool %s: skipped a bad record at byte %d: %s",
                            self._data,
                            where,
                            record,
                        )
                    continue
                entries.append(record)
        return entries, position, bad

    def _read_to_newline(self, position: int, size: int) -> bytes:
        """A chunk from ``position``, read on until it holds a newline: a valid event's record
        can be longer than a chunk (1,000 emoji escaped take 12 KB). At most ``max_bytes``
        (an append never writes a longer record), or the file's end."""
        chunk = b""
        while position + len(chunk) < size and len(chunk) < self.max_bytes:
            start = position + len(chunk)
            more = os.pread(self._data_fd, min(_READ_CHUNK_BYTES, size - start), start)
            chunk += more
            if not more or b"\n" in more:
                break
        return chunk

    def _skip_line(self, position: int, size: int) -> int:
        while position < size:
            chunk = os.pread(self._data_fd, min(_READ_CHUNK_BYTES, size - position), position)
            newline = chunk.find(b"\n")
            if newline >= 0:
                return position + newline + 1
            position += len(chunk)
        return position

    def _read_offset(self) -> int:
        try:
            text = self._offset.read_text("ascii").strip()
        except FileNotFoundError:
            return 0
        try:
            offset = max(0, int(text))
        except ValueError:
            log.warning(
                "spool %s: unreadable offset %r; draining from the start", self._offset, text[:20]
            )
            return 0
        size = os.fstat(self._data_fd).st_size
        if offset > size:
            # The file was emptied or replaced from outside (the spool only ever empties it
            # after resetting the offset): an offset past its end would hide every append.
            log.warning(
                "spool %s: offset %d is past the end of %s (%d bytes), which was emptied or "
                "replaced by hand; draining it from the start",
                self._offset,
                offset,
                DATA_FILE,
                size,
            )
            return 0
        return offset

    def _write_offset(self, offset: int) -> None:
        temporary = self._offset.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, str(offset).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self._offset)
        _fsync_directory(self.directory)

    @contextmanager
    def _appending(self) -> Iterator[None]:
        with self._append_lock:
            fcntl.flock(self._append_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._append_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the files; a second call does nothing (their numbers may be reused)."""
        with self._drain_lock, self._append_lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._data_fd, self._append_fd, self._drain_fd):
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    """Make a created or renamed file's name durable too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
