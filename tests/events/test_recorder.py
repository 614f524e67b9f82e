"""The worker's recorder: an outcome is in the spool file before the response it describes
is sent, so a SIGKILL loses none; fsync is shared (`batch`), per record (`always`) or never."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from appliance.domain.records import ChatOutcome, EmbeddingOutcome, Usage
from appliance.events import spool as spool_module
from appliance.events.recorder import TICK_S, SpoolingRecorder
from appliance.events.spool import FsyncPolicy, SpoolReader, SpoolWriter
from tests import procs


def chat(i: int) -> ChatOutcome:
    return ChatOutcome(correlation_id=f"rec-{i}", model="m", upstream_model="m", backend="b", route="direct",
                       streaming=False, messages=[{"role": "user", "content": f"q{i}"}], response_text="a",
                       finish_reason="stop", usage=Usage(3, 1), started_at=1_700_000_000 + i)


def spooled() -> float:
    return REGISTRY.get_sample_value("appliance_events_spooled_total", {"kind": "chat"}) or 0.0


def keys(directory: Path) -> list[str]:
    reader, out = SpoolReader(directory), []
    while records := reader.read(1000):
        out += [r.key for r in records]
        reader.ack(records[-1])
    return out


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every descriptor the spool fsyncs (they are fsynced for real too)."""
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)
    monkeypatch.setattr(spool_module, "os", SimpleNamespace(**{**vars(os), "fsync": fsync}))
    return calls


def writer(d: Path, fsync: FsyncPolicy = "batch", segment_bytes: int = 1 << 20) -> SpoolWriter:
    return SpoolWriter(d, max_bytes=1 << 24, segment_bytes=segment_bytes, fsync=fsync)


def test_an_outcome_is_in_the_spool_file_when_recording_returns_without_an_fsync(tmp_path: Path,
                                                                                 fsyncs: list[int]) -> None:
    recorder = SpoolingRecorder(writer(tmp_path))  # not started: no background task helps
    recorder.chat(chat(0))
    recorder.embedding(EmbeddingOutcome(correlation_id="emb-0", model="m", inputs=1, tokens=1, dimensions=3,
                                        latency_ms=1.0))
    assert keys(tmp_path) == ["rec-0", "emb-0"]
    assert fsyncs == []  # `batch`: the serving path never waits for the disk


def test_a_process_killed_right_after_recording_loses_nothing(tmp_path: Path) -> None:
    script = f"""
import os, signal
from pathlib import Path
from appliance.events.recorder import SpoolingRecorder
from appliance.events.spool import SpoolWriter
from tests.events.test_recorder import chat
recorder = SpoolingRecorder(SpoolWriter(Path({str(tmp_path)!r}), max_bytes=1 << 24, segment_bytes=1 << 16))
for i in range(2000):
    recorder.chat(chat(i))
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=procs.ROOT, env=procs.child_env(), timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert keys(tmp_path) == [f"rec-{i}" for i in range(2000)]


def test_batch_shares_one_fsync_job_which_closes_completed_segments(tmp_path: Path, fsyncs: list[int]) -> None:
    w = writer(tmp_path, segment_bytes=4096)
    for i in range(200):
        assert w.append("chat", f"k{i}", b"x" * 100)
    assert fsyncs == []
    retired = list(w._retired)  # completed segments, kept open for their fsync
    assert len(retired) > 1
    job = w.sync_job()
    assert job is not None
    job()
    assert len(fsyncs) == len(retired) + 2  # each completed segment, the current one, the directory
    for fd in retired:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed after its fsync
    assert w.sync_job() is None  # nothing written since
    w.append("chat", "more", b"y")
    assert w.sync_job() is not None
    w.close()
    assert keys(tmp_path) == [f"k{i}" for i in range(200)] + ["more"]


def test_always_fsyncs_every_record_before_append_returns(tmp_path: Path, fsyncs: list[int]) -> None:
    w = writer(tmp_path, "always")
    for i in range(5):
        w.append("chat", f"k{i}", b"x")
        assert len(fsyncs) >= i + 1
    w.close()


def test_never_fsyncs(tmp_path: Path, fsyncs: list[int]) -> None:
    w = writer(tmp_path, "never", segment_bytes=1024)
    for i in range(50):
        w.append("chat", f"k{i}", b"x" * 100)
    assert w.sync_job() is None
    w.close()
    assert fsyncs == [] and len(keys(tmp_path)) == 50


def test_a_failed_write_holds_its_rest_and_what_follows_in_order_until_a_flush(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write, full = os.write, [True]
    calls = [0]

    def write(fd: int, data: Any) -> int:
        calls[0] += 1
        if full[0] and calls[0] == 2:
            return int(real_write(fd, bytes(data)[:7]))  # a short write, then the disk is full
        if full[0] and calls[0] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(real_write(fd, data))
    monkeypatch.setattr(spool_module, "os", SimpleNamespace(**{**vars(os), "write": write}))
    w = writer(tmp_path, "never")
    for i in range(5):
        assert w.append("chat", f"k{i}", b"payload %d" % i)
    assert w.size > 0 and keys(tmp_path) == ["k0"]  # the rest waits in memory (and in `size`)
    w.flush()  # still full: nothing lost, nothing out of order
    full[0] = False
    w.flush()
    w.append("chat", "k5", b"after")
    reader = SpoolReader(tmp_path)
    records = reader.read(100)
    assert [r.key for r in records] == [f"k{i}" for i in range(6)] and reader.corrupt == 0
    assert records[1].data == b"payload 1"


async def test_the_started_recorder_counts_and_fsyncs_in_the_background(tmp_path: Path, fsyncs: list[int]) -> None:
    recorder = SpoolingRecorder(writer(tmp_path), fsync_interval_s=TICK_S)
    before = spooled()
    await recorder.start()
    for i in range(10):
        recorder.chat(chat(i))
    assert fsyncs == []
    await asyncio.sleep(TICK_S * 4)
    assert fsyncs and spooled() - before == 10
    await recorder.close()
    assert keys(tmp_path) == [f"rec-{i}" for i in range(10)]
