"""The disk spool: order, bounds, torn writes, checksums, survival across a reopen."""

from __future__ import annotations

from pathlib import Path

from appliance.events.spool import Spool


def spool(d: Path, **kw: int) -> Spool:
    return Spool(d, max_bytes=kw.get("max_bytes", 1 << 20), segment_bytes=kw.get("segment_bytes", 256), fsync="always")


def drain(s: Spool) -> list[str]:
    out = []
    while s.pending():
        batch = s.read(5)
        out += [r.msg_id for r in batch]
        s.ack(batch[-1])
    return out


def test_records_come_back_in_order_across_segments_and_files_go_after_acks(tmp_path: Path) -> None:
    s = spool(tmp_path)
    for i in range(100):
        assert s.append("pipeline.x", f"m{i}", b'{"i": %d}' % i)
    assert len(list(tmp_path.glob("*.seg"))) > 5
    assert drain(s) == [f"m{i}" for i in range(100)]
    assert s.size == 0 and len(list(tmp_path.glob("*.seg"))) == 1  # only the fresh, empty one


def test_unacked_records_survive_a_reopen(tmp_path: Path) -> None:
    s = spool(tmp_path)
    for i in range(20):
        s.append("pipeline.x", f"m{i}", b"x")
    batch = s.read(8)
    s.ack(batch[-1])
    s.close()
    assert drain(spool(tmp_path)) == [f"m{i}" for i in range(8, 20)]


def test_a_full_spool_refuses(tmp_path: Path) -> None:
    s = spool(tmp_path, max_bytes=500)
    accepted = sum(s.append("pipeline.x", f"m{i}", b"y" * 40) for i in range(50))
    assert 0 < accepted < 50 and s.size <= 500


def test_a_torn_tail_is_ignored_and_a_bad_checksum_skipped(tmp_path: Path) -> None:
    s = spool(tmp_path, segment_bytes=1 << 20)
    for i in range(3):
        s.append("pipeline.x", f"m{i}", b"payload")
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    raw = bytearray(seg.read_bytes())
    raw[-3] ^= 0xFF          # corrupt the last record's body
    seg.write_bytes(bytes(raw) + b"\x00\x00\x00\x50\x00")  # and a torn half-record after it
    s2 = spool(tmp_path, segment_bytes=1 << 20)
    records = s2.read(10)
    assert [r.msg_id for r in records] == ["m0", "m1", ""] and s2.corrupt == 1
