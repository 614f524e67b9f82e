"""The on-disk spool every event passes through: one writer process, one reader process.

A gateway worker appends what happened (outcome records) with `SpoolWriter`; the relay
process reads them with `SpoolReader`, publishes to JetStream and acknowledges. The
spool is the write-ahead path, not an outage buffer: a worker never talks to NATS, and
whatever NATS did not acknowledge is still on disk after any crash or restart.

Layout of a spool directory: segment files `NNNNNNNNNNNN.seg` holding records
`[u32 length][u32 crc32][kind \\n key \\n data]`, and a `cursor` file (written by the reader
only) naming the first record not yet acknowledged. A writer always starts a new segment
and only ever appends to its newest one, so a segment with a successor is complete: the
reader deletes it once the cursor has passed it. A torn record (a crash mid-write) can only
end a segment; the reader skips it once the next segment exists. A record whose CRC fails
is skipped and counted. The writer bounds the bytes behind the cursor: `append` returns
False when the spool is full, and the caller counts the drop.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">II")
FsyncPolicy = Literal["always", "batch", "never"]
FLUSH_BYTES = 64 * 1024  # a buffered writer writes at least this often
SIZE_REFRESH_S = 1.0  # how stale the writer's view of the reader's progress may be
READ_BYTES = 256 * 1024  # the reader reads a segment this much at a time


@dataclass(frozen=True, slots=True)
class Record:
    kind: str
    key: str
    data: bytes
    segment: int
    end: int  # offset just past this record in its segment


def segments(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in directory.glob("*.seg") if p.stem.isdigit())


def segment_path(directory: Path, seq: int) -> Path:
    return directory / f"{seq:012d}.seg"


def read_cursor(directory: Path) -> tuple[int, int]:
    try:
        seq, offset = (directory / "cursor").read_text().split()
        return int(seq), int(offset)
    except (OSError, ValueError):
        first = segments(directory)
        return (first[0] if first else 1), 0


def pending_bytes(directory: Path, cursor: tuple[int, int] | None = None) -> int:
    """Bytes of records written (and flushed) but not acknowledged: behind `cursor`, or the
    one in the cursor file."""
    seq, offset = cursor or read_cursor(directory)
    total = 0
    for s in segments(directory):
        if s >= seq:
            try:
                total += segment_path(directory, s).stat().st_size - (offset if s == seq else 0)
            except FileNotFoundError:  # deleted by the reader meanwhile
                continue
    return max(total, 0)




class SpoolWriter:
    """Appends records; buffered (`flush()` writes, `sync()` fsyncs) unless fsync is `always`."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int, fsync: FsyncPolicy = "batch") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._max = max_bytes
        self._segment_max = segment_bytes
        self.fsync_policy = fsync
        self._buf = bytearray()
        existing = segments(directory)
        self._seq = max(existing[-1] if existing else 0, read_cursor(directory)[0]) + 1
        self._fd = self._open(self._seq)
        self._written = 0  # bytes in the current segment
        self._unsynced = False
        self._pending = pending_bytes(directory)  # behind the cursor, as of `_checked`
        self._checked = time.monotonic()

    def _open(self, seq: int) -> int:
        return os.open(segment_path(self.dir, seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    @property
    def size(self) -> int:
        """Bytes not yet acknowledged, buffered ones included (the reader's progress as of
        at most `SIZE_REFRESH_S` ago)."""
        return self._pending + len(self._buf)

    def append(self, kind: str, key: str, data: bytes) -> bool:
        """Add a record (in memory until the next flush): False when the spool is full.
        Built in place: this runs on the serving path for every outcome."""
        prefix = f"{kind}\n{key}\n".encode()
        length = len(prefix) + len(data)
        if self._pending + len(self._buf) + length + _HEAD.size > self._max:
            self._refresh_size()
            if self.size + length + _HEAD.size > self._max:
                return False
        buf = self._buf
        buf += _HEAD.pack(length, zlib.crc32(data, zlib.crc32(prefix)))
        buf += prefix
        buf += data
        if self.fsync_policy == "always":
            self.flush()
            self.sync()
        elif len(self._buf) >= FLUSH_BYTES:
            self.flush()
        return True

    def flush(self) -> None:
        """Write the buffer to the current segment; start a new one past `segment_bytes`."""
        if self._buf:
            done = 0
            try:
                with memoryview(self._buf) as view:
                    while done < len(view):
                        done += os.write(self._fd, view[done:])
            finally:  # after a failed write (disk full), the rest follows on from where it stopped
                del self._buf[:done]
                self._written += done
                self._pending += done
                self._unsynced = self._unsynced or done > 0
        if self._written >= self._segment_max:
            self.sync()
            os.close(self._fd)
            self._seq += 1
            self._fd = self._open(self._seq)
            self._written = 0
        if time.monotonic() - self._checked >= SIZE_REFRESH_S:
            self._refresh_size()

    def sync(self) -> None:
        """fsync what was flushed since the last sync (`never` skips it)."""
        if self._unsynced and self.fsync_policy != "never":
            os.fsync(self._fd)
        self._unsynced = False

    def sync_fd(self) -> int | None:
        """The descriptor to fsync off the event loop, or None when nothing needs it."""
        if not self._unsynced or self.fsync_policy == "never":
            return None
        self._unsynced = False
        return self._fd

    def _refresh_size(self) -> None:
        self._pending = pending_bytes(self.dir)
        self._checked = time.monotonic()

    def close(self) -> None:
        self.flush()
        self.sync()
        os.close(self._fd)


class SpoolReader:
    """Reads records from the cursor on and acknowledges them (the relay's side).

    The cursor file is rewritten at most every `save_every_s` (and by `save()`, and when a
    segment is deleted): after a crash the records acknowledged since are read and
    published again, and JetStream drops them by `Nats-Msg-Id`.
    """

    def __init__(self, directory: Path, *, save_every_s: float = 1.0) -> None:
        self.dir = directory
        self.corrupt = 0
        self._torn = 0  # the last segment found to end in a torn record
        self._cursor = read_cursor(directory)
        self._saved = self._cursor
        self._save_every = save_every_s
        self._saved_at = time.monotonic()

    @property
    def cursor(self) -> tuple[int, int]:
        return self._cursor

    def size(self) -> int:
        return pending_bytes(self.dir, self._cursor)

    def end(self) -> tuple[int, int]:
        """Position just past everything written so far."""
        existing = segments(self.dir)
        if not existing:
            return self._cursor
        last = existing[-1]
        try:
            return last, segment_path(self.dir, last).stat().st_size
        except FileNotFoundError:
            return self._cursor

    def read(self, limit: int) -> list[Record]:
        """Up to `limit` records from the cursor on, in order. Complete segments the cursor
        has reached the end of are deleted on the way."""
        out: list[Record] = []
        seq, offset = self._cursor
        while len(out) < limit:
            existing = [s for s in segments(self.dir) if s >= seq]
            if not existing:
                break
            if existing[0] > seq:  # the cursor's segment is gone (acked and deleted): move on
                seq, offset = existing[0], 0
            complete = len(existing) > 1  # the writer has moved past it
            offset, torn = self._read_segment(seq, offset, limit, out)
            if len(out) >= limit or not complete:
                break
            if torn and seq != self._torn:  # counted once, however often its segment is read
                self._torn = seq
                self.corrupt += 1
                log.error("spool segment ends in a torn record; skipped", extra={"segment": seq, "offset": offset})
            if not out:  # nothing unacknowledged left in it: forget it now
                segment_path(self.dir, seq).unlink(missing_ok=True)
                self._set_cursor(existing[1], 0)
            seq, offset = existing[1], 0
        return out

    def _read_segment(self, seq: int, offset: int, limit: int, out: list[Record]) -> tuple[int, bool]:
        """Append records of segment `seq` from `offset`; returns where reading stopped and
        whether a torn (incomplete) record is there. Reads `READ_BYTES` at a time, not to
        the end of the segment: a backlog is read a batch at a time."""
        try:
            f = open(segment_path(self.dir, seq), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return offset, False
        with f:
            f.seek(offset)
            data = f.read(READ_BYTES)
            pos = 0
            while len(out) < limit:
                have = len(data) - pos
                length, crc = _HEAD.unpack_from(data, pos) if have >= _HEAD.size else (0, 0)
                need = _HEAD.size + length
                if have < need:  # the next record is not all here: read on, if the segment has it
                    rest = os.fstat(f.fileno()).st_size - offset - len(data)
                    if have + rest < need or rest <= 0:
                        return offset + pos, have > 0
                    data, offset, pos = data[pos:] + f.read(max(READ_BYTES, need - have)), offset + pos, 0
                    continue
                if not length:  # zeros where a record should begin: nothing after them can be read
                    return offset + pos, True
                body = data[pos + _HEAD.size:pos + need]
                pos += need
                if zlib.crc32(body) != crc:
                    self.corrupt += 1
                    log.error("spool record failed its checksum; skipped", extra={"segment": seq, "offset": offset + pos})
                    out.append(Record("", "", b"", seq, offset + pos))  # acknowledged like any other, never published
                    continue
                kind, key, payload = body.split(b"\n", 2)
                out.append(Record(kind.decode(), key.decode(), payload, seq, offset + pos))
        return offset + pos, False

    def ack(self, record: Record) -> None:
        """Everything up to and including `record` is done with: move the cursor, delete the
        segments wholly behind it."""
        behind = [s for s in segments(self.dir) if s < record.segment]
        self._set_cursor(record.segment, record.end, save=bool(behind))
        for s in behind:  # after the cursor moved past them on disk
            segment_path(self.dir, s).unlink(missing_ok=True)

    def _set_cursor(self, seq: int, offset: int, *, save: bool = True) -> None:
        self._cursor = (seq, offset)
        if save or time.monotonic() - self._saved_at >= self._save_every:
            self.save()

    def save(self) -> None:
        """Write the cursor file (atomically) if it moved since the last time."""
        if self._cursor == self._saved:
            return
        tmp = self.dir / "cursor.tmp"
        tmp.write_text(f"{self._cursor[0]} {self._cursor[1]}")
        os.replace(tmp, self.dir / "cursor")
        self._saved = self._cursor
        self._saved_at = time.monotonic()
