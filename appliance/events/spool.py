"""An append-only on-disk spool for events NATS has not acknowledged yet.

Segment files `NNNNNNNNNNNN.seg` hold records `[u32 length][u32 crc32][subject \\n msg-id \\n data]`.
A `cursor` file names the first record not yet acknowledged; `ack()` moves it and deletes
segments wholly behind it, so a file is removed only after every record in it was acked.
A torn record at the end of a segment (a crash mid-write) ends that segment's reading; a
record whose CRC does not match is skipped and counted. The total size is bounded: `append`
returns False when the spool is full, and the caller counts the drop.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">II")
FsyncPolicy = Literal["always", "batch", "never"]


@dataclass(frozen=True, slots=True)
class Record:
    subject: str
    msg_id: str
    data: bytes
    segment: int
    end: int  # offset just past this record in its segment


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int, fsync: FsyncPolicy = "batch") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._max = max_bytes
        self._segment_max = segment_bytes
        self._fsync = fsync
        self.corrupt = 0
        self._cursor = self._load_cursor()
        segments = self._segments()
        self._write_seq = segments[-1] if segments else max(self._cursor[0], 1)
        self._writer: BinaryIO = open(self._path(self._write_seq), "ab")  # noqa: SIM115 - lives with the spool
        self._size = sum(self._path(s).stat().st_size for s in segments) - self._cursor[1]
        self._dirty = False

    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:012d}.seg"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.seg") if p.stem.isdigit())

    def _load_cursor(self) -> tuple[int, int]:
        try:
            seq, offset = (self.dir / "cursor").read_text().split()
            return int(seq), int(offset)
        except (OSError, ValueError):
            first = self._segments()
            return (first[0] if first else 1), 0

    @property
    def size(self) -> int:
        """Bytes of records not yet acknowledged."""
        return max(self._size, 0)

    def pending(self) -> bool:
        return self.size > 0

    def append(self, subject: str, msg_id: str, data: bytes) -> bool:
        body = subject.encode() + b"\n" + msg_id.encode() + b"\n" + data
        record = _HEAD.pack(len(body), zlib.crc32(body)) + body
        if self.size + len(record) > self._max:
            return False
        if self._writer.tell() >= self._segment_max:
            self._rotate()
        self._writer.write(record)
        self._writer.flush()
        self._size += len(record)
        if self._fsync == "always":
            os.fsync(self._writer.fileno())
        else:
            self._dirty = True
        return True

    def sync(self) -> None:
        """fsync what was appended since the last sync (the `batch` policy calls this)."""
        if self._dirty and self._fsync != "never":
            os.fsync(self._writer.fileno())
        self._dirty = False

    def _rotate(self) -> None:
        self.sync()
        self._writer.close()
        self._write_seq += 1
        self._writer = open(self._path(self._write_seq), "ab")  # noqa: SIM115

    def read(self, limit: int) -> list[Record]:
        """Up to `limit` records from the cursor on, in order."""
        out: list[Record] = []
        seq, offset = self._cursor
        for s in (x for x in self._segments() if x >= seq):
            start = offset if s == seq else 0
            with open(self._path(s), "rb") as f:
                f.seek(start)
                pos = start
                while len(out) < limit:
                    head = f.read(_HEAD.size)
                    if len(head) < _HEAD.size:
                        break
                    length, crc = _HEAD.unpack(head)
                    body = f.read(length)
                    if len(body) < length:
                        break  # torn tail: written later, or a crash mid-write
                    pos += _HEAD.size + length
                    if zlib.crc32(body) != crc:
                        self.corrupt += 1
                        log.error("spool record failed its checksum; skipped", extra={"segment": s, "offset": pos})
                        out.append(Record("", "", b"", s, pos))  # acked like any other, never published
                        continue
                    subject, msg_id, data = body.split(b"\n", 2)
                    out.append(Record(subject.decode(), msg_id.decode(), data, s, pos))
            if len(out) >= limit:
                break
        return out

    def ack(self, record: Record) -> None:
        """Everything up to and including `record` is acknowledged."""
        seq, offset = self._cursor
        released = 0
        for s in self._segments():
            if s >= record.segment:
                break
            released += self._path(s).stat().st_size - (offset if s == seq else 0)
            if s != self._write_seq:
                self._path(s).unlink()
        released += record.end - (offset if record.segment == seq else 0)
        self._size -= released
        self._cursor = (record.segment, record.end)
        if record.segment != self._write_seq and record.end >= self._path(record.segment).stat().st_size:
            self._path(record.segment).unlink()
            self._cursor = (record.segment + 1, 0)
        self._save_cursor()
        if self._size <= 0 and self._writer.tell() > 0:
            self._reset()

    def _reset(self) -> None:
        """All acknowledged: start a fresh, empty segment."""
        self._writer.close()
        self._path(self._write_seq).unlink(missing_ok=True)
        self._write_seq += 1
        self._writer = open(self._path(self._write_seq), "ab")  # noqa: SIM115
        self._cursor = (self._write_seq, 0)
        self._size = 0
        self._save_cursor()

    def _save_cursor(self) -> None:
        tmp = self.dir / "cursor.tmp"
        tmp.write_text(f"{self._cursor[0]} {self._cursor[1]}")
        os.replace(tmp, self.dir / "cursor")

    def close(self) -> None:
        self.sync()
        self._writer.close()
