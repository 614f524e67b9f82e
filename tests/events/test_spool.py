"""The disk spool: order, bounds, torn writes, checksums, restarts, a writer and a reader at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appliance.events.spool import READ_BYTES, SpoolReader, SpoolWriter, pending_bytes


def writer(d: Path, **kw: int) -> SpoolWriter:
    return SpoolWriter(d, max_bytes=kw.get("max_bytes", 1 << 20), segment_bytes=kw.get("segment_bytes", 256),
                       fsync="always")


def drain(r: SpoolReader, batch: int = 5) -> list[str]:
    out = []
    while records := r.read(batch):
        out += [x.key for x in records]
        r.ack(records[-1])
    return out


def test_records_come_back_in_order_across_segments_and_files_go_after_acks(tmp_path: Path) -> None:
    w = writer(tmp_path)
    for i in range(100):
        assert w.append("chat", f"m{i}", b'{"i": %d}' % i)
    w.flush()
    assert len(list(tmp_path.glob("*.seg"))) > 5
    r = SpoolReader(tmp_path)
    assert drain(r) == [f"m{i}" for i in range(100)]
    assert r.size() == 0
    r.save()
    assert pending_bytes(tmp_path) == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the one the writer still appends to


def test_unacked_records_survive_a_restart_of_both_sides(tmp_path: Path) -> None:
    w = writer(tmp_path)
    for i in range(20):
        w.append("chat", f"m{i}", b"x")
    r = SpoolReader(tmp_path)
    batch = r.read(8)
    r.ack(batch[-1])
    r.save()  # as the relay does every second and on its way out
    w.close()
    w2 = writer(tmp_path)  # a restarted worker writes on in a new segment
    w2.append("chat", "after-restart", b"y")
    assert drain(SpoolReader(tmp_path)) == [f"m{i}" for i in range(8, 20)] + ["after-restart"]


def test_after_a_crash_the_records_acked_since_the_last_save_come_again(tmp_path: Path) -> None:
    w = writer(tmp_path)
    for i in range(10):
        w.append("chat", f"m{i}", b"x")
    r = SpoolReader(tmp_path, save_every_s=3600)
    r.ack(r.read(4)[-1])
    r.save()
    r.ack(r.read(4)[-1])  # not saved: the relay is killed here
    assert drain(SpoolReader(tmp_path)) == [f"m{i}" for i in range(4, 10)]  # JetStream drops the repeats


def test_a_full_spool_refuses_until_the_reader_catches_up(tmp_path: Path) -> None:
    w = writer(tmp_path, max_bytes=500)
    accepted = sum(w.append("chat", f"m{i}", b"y" * 40) for i in range(50))
    assert 0 < accepted < 50 and w.size <= 500
    r = SpoolReader(tmp_path)
    drain(r)
    r.save()
    assert w.append("chat", "room-again", b"y" * 40)  # the writer re-reads the reader's progress


def test_a_torn_tail_is_skipped_once_the_segment_is_complete_and_a_bad_checksum_too(tmp_path: Path) -> None:
    w = writer(tmp_path, segment_bytes=1 << 20)
    for i in range(3):
        w.append("chat", f"m{i}", b"payload")
    w.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    raw = bytearray(seg.read_bytes())
    raw[-3] ^= 0xFF  # corrupt the last record's body
    seg.write_bytes(bytes(raw) + b"\x00\x00\x00\x50\x00")  # and a torn half-record after it (a crash)
    r = SpoolReader(tmp_path)
    first = r.read(10)
    assert [x.key for x in first] == ["m0", "m1", ""] and r.corrupt == 1
    r.ack(first[-1])
    assert r.read(10) == []  # the torn record may still be being written: wait
    w2 = writer(tmp_path, segment_bytes=1 << 20)  # the restarted worker starts a new segment
    w2.append("chat", "next", b"payload")
    assert [x.key for x in r.read(10)] == ["next"] and r.corrupt == 2


def test_a_backlog_of_big_and_small_records_is_read_a_batch_at_a_time_intact(tmp_path: Path) -> None:
    w = writer(tmp_path, segment_bytes=8 << 20, max_bytes=16 << 20)
    sizes = [10, READ_BYTES + 7, 3, 2 * READ_BYTES, 100, READ_BYTES - 20] * 3  # records across read boundaries
    for i, n in enumerate(sizes):
        assert w.append("chat", f"m{i}", bytes([i]) * n)
    w.close()
    r = SpoolReader(tmp_path)
    got = []
    while records := r.read(2):
        got += [(x.key, len(x.data), x.data[:1]) for x in records]
        r.ack(records[-1])
    assert got == [(f"m{i}", n, bytes([i])) for i, n in enumerate(sizes)] and r.corrupt == 0


@pytest.mark.parametrize("tail", [b"\xff\xff\xff\xf0\x00\x00\x00\x00",  # a length of ~4 GB: never read
                                  bytes(64)])                            # zeros where a record should begin
def test_a_record_that_cannot_be_read_to_its_end_is_a_torn_one(tmp_path: Path, tail: bytes) -> None:
    w = writer(tmp_path, segment_bytes=1 << 20)
    w.append("chat", "m0", b"payload")
    w.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    seg.write_bytes(seg.read_bytes() + tail)
    writer(tmp_path).close()  # a later segment: this one is complete
    r = SpoolReader(tmp_path)
    [record] = r.read(10)
    r.ack(record)
    assert record.key == "m0" and r.read(10) == [] and r.corrupt == 1


def test_a_writer_and_a_reader_at_once_lose_and_repeat_nothing(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, max_bytes=1 << 30, segment_bytes=4096, fsync="never")
    n = 5_000

    def write() -> None:
        for i in range(n):
            assert w.append("embedding", f"k{i}", b"x" * (i % 50))
            if i % 37 == 0:
                w.flush()
        w.close()

    t = threading.Thread(target=write)
    t.start()
    r = SpoolReader(tmp_path)
    seen: list[str] = []
    while t.is_alive() or len(seen) < n:
        seen += drain(r, batch=64)
    t.join()
    assert seen == [f"k{i}" for i in range(n)]
    r.save()
    assert pending_bytes(tmp_path) == 0
