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
False when the spool is full, and the caller counts the drop. A record is in the file (the
kernel has it) when `append` returns, so killing the writer loses nothing it appended; what
a power cut can take depends on its fsync policy (`SpoolWriter`).
"""

from __future__ import annotations

import functools
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">II")
FsyncPolicy = Literal["always", "batch", "never"]
SIZE_REFRESH_S = 1.0  # how stale the writer's view of the reader's progress may be
READ_BYTES = 256 * 1024  # the reader reads a segment this much at a time
ROLL_RETRY_BYTES = 1024 * 1024  # after a new segment could not be created, try again this much later


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
    """Appends records, each written to its segment (one `os.write`) before `append` returns.

    From then on a record is the kernel's: killing the process cannot lose it, only a power
    cut can, until it is fsynced. Under `always` `append` fsyncs each record itself; under
    `batch` the caller runs `sync_job()` off the event loop now and then, so every record
    written since shares one fsync; `never` never fsyncs. A write that fails (disk full)
    leaves the rest of its record, and the records after it, in memory (counted in `size`,
    so bounded by `max_bytes`) until a `flush()` gets them out.
    """

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int, fsync: FsyncPolicy = "batch") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._max = max_bytes
        self._segment_max = segment_bytes
        self.fsync_policy = fsync
        self._held = bytearray()  # what failed writes left unwritten, in order
        self._failing = False  # the last write failed (logged once, and once when writes succeed again)
        self._retired: list[int] = []  # completed segments written since their last fsync, still open for it
        existing = segments(directory)
        self._seq = max(existing[-1] if existing else 0, read_cursor(directory)[0]) + 1
        self._fd = self._open(self._seq)
        self._written = 0  # bytes in the current segment
        self._roll_at = segment_bytes  # start the next segment at this size of the current one
        self._unsynced = False
        self._new_entry = True  # a segment was created since the directory was last fsynced
        self._pending = pending_bytes(directory)  # not yet acknowledged, as of `_checked`, plus what was appended since
        self._checked = time.monotonic()

    def _open(self, seq: int) -> int:
        return os.open(segment_path(self.dir, seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    @property
    def size(self) -> int:
        """Bytes not yet acknowledged, held ones included (the reader's progress as of at
        most `SIZE_REFRESH_S` ago, if `flush()` runs that often)."""
        return self._pending

    def append(self, kind: str, key: str, data: bytes) -> bool:
        """Write a record: False when the spool is full. On the serving path for every
        outcome, so built in one piece and written in one call."""
        prefix = f"{kind}\n{key}\n".encode()
        length = len(prefix) + len(data)
        size = _HEAD.size + length
        if self._pending + size > self._max:
            self._refresh_size()
            if self._pending + size > self._max:
                return False
        record = b"".join((_HEAD.pack(length, zlib.crc32(data, zlib.crc32(prefix))), prefix, data))
        self._pending += size
        if self._held:  # behind what an earlier failed write left: in order, at the next flush
            self._held += record
            return True
        self._write(record)
        if self._held:
            return True
        if self.fsync_policy == "always":
            try:
                self.sync()
            except OSError:
                log.exception("event spool fsync failed")
        if self._written >= self._roll_at:
            self._roll()
        return True

    def _write(self, data: bytes | bytearray) -> None:
        """Write `data` after what is in the segment; what a failure leaves is held."""
        done = 0
        try:
            done = os.write(self._fd, data)
            while done < len(data):  # a short write: only ever seen with the disk (nearly) full
                done += os.write(self._fd, memoryview(data)[done:])
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.error("event spool write failed; records wait in memory until it succeeds",
                          extra={"error": str(exc), "segment": self._seq})
            self._held += memoryview(data)[done:]
        else:
            if self._failing:
                self._failing = False
                log.warning("event spool writes succeed again", extra={"segment": self._seq})
        finally:
            self._written += done
            self._unsynced = self._unsynced or done > 0

    def flush(self) -> None:
        """Write what failed writes left (in order, before anything newer), start a new
        segment past `segment_bytes`, and refresh the view of the reader's progress."""
        if self._held:
            held, self._held = self._held, bytearray()
            self._write(held)
        if self._written >= self._roll_at and not self._held:
            self._roll()
        if time.monotonic() - self._checked >= SIZE_REFRESH_S:
            self._refresh_size()

    def _roll(self) -> None:
        """Start the next segment. The completed one stays open until it is fsynced (by
        `sync()` or a sync job), so the serving path never waits on a disk flush. If the
        next one cannot be created, the current one goes on growing (logged)."""
        try:
            fd = self._open(self._seq + 1)
        except OSError as exc:
            log.error("cannot start a new spool segment; appending to the current one",
                      extra={"error": str(exc), "segment": self._seq})
            self._roll_at = self._written + ROLL_RETRY_BYTES
            return
        if self.fsync_policy == "batch":  # a sync job may hold it now: the next one closes it
            self._retired.append(self._fd)
        else:
            os.close(self._fd)
        self._seq += 1
        self._fd = fd
        self._written = 0
        self._roll_at = self._segment_max
        self._unsynced = False
        self._new_entry = True

    def sync(self) -> None:
        """fsync, here and now, everything written since the last sync (`never` skips it)."""
        job = self.sync_job()
        if job is not None:
            job()

    def sync_job(self) -> Callable[[], None] | None:
        """The fsyncs due, as a function to run off the event loop, or None when nothing is
        due: segments written since their last fsync (completed ones are closed after it) and
        the directory when a segment was created. Records written while it runs are left to
        the next one."""
        if self.fsync_policy == "never":
            return None
        retired, self._retired = self._retired, []
        current = self._fd if self._unsynced else None
        directory = self.dir if self._new_entry else None
        self._unsynced = self._new_entry = False
        if not retired and current is None and directory is None:
            return None
        return functools.partial(_fsync, retired, current, directory)

    def _refresh_size(self) -> None:
        self._pending = pending_bytes(self.dir) + len(self._held)
        self._checked = time.monotonic()

    def close(self) -> None:
        """Write what is held, fsync (unless `never`) and close. No sync job may be running."""
        self.flush()
        self.sync()
        os.close(self._fd)


def _fsync(retired: list[int], current: int | None, directory: Path | None) -> None:
    """fsync (and close) completed segments, then the current one and the directory; every
    descriptor is closed however the fsyncs go, and the first failure raised after them."""
    failed: OSError | None = None
    for fd in retired:
        try:
            os.fsync(fd)
        except OSError as exc:
            failed = failed or exc
        finally:
            os.close(fd)
    if current is not None:
        os.fsync(current)
    if directory is not None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if failed is not None:
        raise failed


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
