"""Event pipeline benchmark: gateway RPS with events on vs off (same run, alternating
rounds), and persister throughput draining a backlog.

    python -m tests.perf.bench_events [--seconds 6] [--rounds 3] [--events 50000]

Bars (issue 4): events on vs off under 3% apart; persister >= 5,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from appliance.db.migrate import migrate
from appliance.domain.records import ChatOutcome, Usage
from appliance.embedded.nats import EmbeddedNats
from appliance.embedded.postgres import EmbeddedPostgres
from appliance.events.recorder import SpoolingRecorder
from appliance.events.relay import Relay, read_status
from appliance.events.spool import SpoolWriter, pending_bytes
from tests import procs
from tests.perf.bench_gateway import (
    start_appliance,
    start_nginx,
    start_python_upstream,
    with_children,
    wrk,
)


def chat(i: int) -> ChatOutcome:
    return ChatOutcome(correlation_id=f"bench-{i}", model="bench-model", upstream_model="bench-model", backend="bench",
                       route="direct", streaming=False, messages=[{"role": "user", "content": f"question {i}"}],
                       response_text="an answer of a few words", finish_reason="stop", usage=Usage(9, 6),
                       latency_ms=12.0, started_at=1_700_000_000 + i)


async def spool(root: Path, n: int) -> None:
    """`n` chat outcomes written to spool slot 0 under `root`, as a gateway worker would."""
    recorder = SpoolingRecorder(SpoolWriter(root / "0", max_bytes=1 << 31, segment_bytes=1 << 24))
    await recorder.start()
    for i in range(n):
        recorder.chat(chat(i))
        if i % 1000 == 0:
            await asyncio.sleep(0)
    await recorder.close()


async def fill(url: str, n: int, work: Path) -> None:
    """`n` chat outcomes through a spool slot and the relay into JetStream, as a gateway would."""
    relay = Relay(work / "fill", url, batch=512, publish_timeout_s=5, duplicate_window_s=7200)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await spool(work / "fill", n)
    stop.set()
    await task


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of a gateway, by role: the gateway's processes
    (main, workers) and its relay."""
    out = {"gateway": 0.0, "relay": 0.0}
    for p in with_children(pid):
        with contextlib.suppress(OSError):
            role = "relay" if b"relay" in Path(f"/proc/{p}/cmdline").read_bytes() else "gateway"
            out[role] += process_cpu(p)
    return out


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-ev-"))
    atexit.register(shutil.rmtree, work, True)  # state, logs and NATS store of this run
    up_port = procs.free_port()
    upstream = start_nginx(work, up_port) if shutil.which("nginx") else start_python_upstream(up_port)
    nats = EmbeddedNats(work / "nats")
    nats.start()
    on, on_port = start_appliance(work, "on", up_port, APPLIANCE_NATS_URL=nats.url)
    off, off_port = start_appliance(work, "off", up_port, APPLIANCE_EVENTS__ENABLED="false")
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello"}]}
    rps: dict[str, list[float]] = {"on": [], "off": []}
    # CPU per chat while wrk runs, microseconds: the gateway's processes, and relay + nats-server.
    cpu: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    nats_pid = nats.pid
    assert nats_pid is not None
    try:
        for port in (on_port, off_port):
            wrk(f"http://127.0.0.1:{port}/v1/chat/completions", body, 32, 2, {})
        for _ in range(args.rounds):
            for name, proc, port in (("on", on, on_port), ("off", off, off_port)):
                before, nats_before = cpu_seconds(proc.pid), process_cpu(nats_pid)
                result = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", body, 32, args.seconds, {})
                after, nats_after = cpu_seconds(proc.pid), process_cpu(nats_pid)
                chats = result["rps"] * args.seconds
                rps[name].append(result["rps"])
                cpu[name].append(((after["gateway"] - before["gateway"]) / chats * 1e6,
                                  (after["relay"] - before["relay"] + nats_after - nats_before) / chats * 1e6))
    finally:
        procs.stop(on)
        procs.stop(off)
        upstream.terminate()
    status = read_status(work / "on" / "spool") or {}
    left = sum(pending_bytes(d) for d in (work / "on" / "spool").iterdir() if d.is_dir())
    rows: list[tuple[str, str]] = []
    med_on, med_off = statistics.median(rps["on"]), statistics.median(rps["off"])
    rows.append(("gateway RPS, events on (median of rounds)", f"{med_on:.0f}  {[round(x) for x in rps['on']]}"))
    rows.append(("gateway RPS, events off", f"{med_off:.0f}  {[round(x) for x in rps['off']]}"))
    rows.append(("difference", f"{(med_off - med_on) / med_off * 100:+.1f}% (on slower when positive)"))
    for name in ("on", "off"):
        gateway_us = statistics.median(g for g, _ in cpu[name])
        events_us = statistics.median(e for _, e in cpu[name])
        rows.append((f"CPU per chat, events {name}: gateway | relay + nats-server",
                     f"{gateway_us:.0f} us | {events_us:.0f} us"))
    rows.append(("events published by the relay (2 per chat)", f"{status.get('published')}, spool bytes left {left}"))

    with EmbeddedPostgres(work / "pg", delete_on_stop=True) as pg:
        migrate(pg.url, {"embedding_dim": 384})
        asyncio.run(fill(nats.url, args.events, work))
        port = procs.free_port()
        t = time.perf_counter()
        persister = procs.spawn(["-m", "appliance", "persist"], port, log=work / "persister.log",
                                env=procs.child_env(APPLIANCE_NATS_URL=nats.url, APPLIANCE_DATABASE_URL=pg.url,
                                                    APPLIANCE_EVENTS__PERSISTER_LISTEN=f"127.0.0.1:{port}"))
        with psycopg.connect(pg.url) as conn:
            while True:
                n = conn.execute("SELECT count(*) FROM chat_history").fetchone()[0]  # type: ignore[index]
                if n >= args.events:
                    break
                time.sleep(0.05)
        elapsed = time.perf_counter() - t
        procs.stop(persister)
        rows.append((f"persister: {args.events} chat events (chat_history + chat_pairs rows)",
                     f"{args.events / elapsed:.0f} events/s ({elapsed:.1f} s incl. start)"))
    nats.stop()
    print(f"\nevents benchmark: 1 worker, 32 connections, {args.seconds}s x {args.rounds} rounds, "
          "nginx upstream\n")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
