"""Event pipeline benchmark: gateway RPS with events on vs off (same run, alternating
rounds), and persister throughput draining a backlog.

    python -m tests.perf.bench_events [--seconds 5] [--rounds 5] [--events 50000] [--baseline DIR]
    python -m tests.perf.bench_events --recorder [--baseline DIR]

Two more conditions take the events-on difference apart. A gateway with events on but NATS
unreachable: what it loses against events off is the serving processes' own share (the
spool writes). The events-off gateway with a minimal publisher (jetstream_load.py) putting
the same messages into the same JetStream at the events-on rate: nats-server's share, which
no relay can save. Each row also gives CPU per chat by process and how idle the machine was.
With `--baseline DIR` (another checkout, e.g. a `git worktree` of an older commit) its
events-on and spool-only gateways take their turns in the same rounds, so a change to the
serving path is compared with what it replaces under the same noise. `--recorder` only
times the worker's recorder (CPU per outcome, no server around it), of this checkout and the
baseline's: a difference of a few microseconds per chat that RPS on a shared machine cannot
resolve.

Bars (issue 4): events on vs off under 3% apart; persister >= 5,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
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
from appliance.events.relay import Relay
from appliance.events.spool import SpoolWriter, pending_bytes
from appliance.events.spool_root import read_status
from tests import procs
from tests.perf.bench_gateway import (
    start_appliance,
    start_nginx,
    start_python_upstream,
    with_children,
    wrk,
)
from tests.perf.scratch import outside_tree, scratch_dir


def chat(i: int) -> ChatOutcome:
    return ChatOutcome(correlation_id=f"bench-{i}", model="bench-model", upstream_model="bench-model", backend="bench",
                       route="direct", streaming=False, messages=[{"role": "user", "content": f"question {i}"}],
                       response_text="an answer of a few words", finish_reason="stop", usage=Usage(9, 6),
                       latency_ms=12.0, started_at=1_700_000_000 + i)


async def spool(root: Path, n: int) -> None:
    """`n` chat outcomes written to spool slot 0 under `root`, as a gateway worker would."""
    root = outside_tree(root)
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


async def recording(n: int, per_tick: int) -> float:
    """CPU microseconds (all threads, the recorder's background task included) per chat
    outcome recorded through the public recorder API, `per_tick` outcomes per 50 ms (at
    4,000 RPS: 200), into a fresh spool with the default `batch` fsync."""
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp:
        recorder = SpoolingRecorder(SpoolWriter(Path(tmp), max_bytes=1 << 31, segment_bytes=4 << 20),
                                    fsync_interval_s=1.0)
        outcomes = [chat(i) for i in range(per_tick)]
        await recorder.start()
        used = 0.0
        for _ in range(n // per_tick):
            t = time.process_time()
            for outcome in outcomes:
                recorder.chat(outcome)
            used += time.process_time() - t
            t = time.process_time()
            await asyncio.sleep(0.05)  # the rest of the requests' work; the recorder's tick runs here
            used += time.process_time() - t
        await recorder.close()
    return used / (n // per_tick * per_tick) * 1e6


def recorder_cost(tree: Path, runs: int) -> list[float]:
    """`recording()` (this file's) `runs` times in a child process whose `appliance` is `tree`'s."""
    code = (f"import sys; sys.path.insert(0, {str(tree)!r}); import appliance; sys.path.remove({str(tree)!r}); "
            f"sys.path.insert(0, {str(procs.ROOT)!r}); assert appliance.__file__.startswith({str(tree)!r}); "
            "import asyncio; from tests.perf.bench_events import recording; "
            f"print(*[asyncio.run(recording(20_000, 200)) for _ in range({runs})])")
    out = subprocess.run([sys.executable, "-c", code], cwd=procs.ROOT, env=procs.child_env(),
                         capture_output=True, text=True, check=True).stdout
    return [float(x) for x in out.split()]


def recorder_main(baseline: Path | None, rounds: int) -> int:
    trees = {"this checkout": procs.ROOT} | ({"baseline": baseline.resolve()} if baseline else {})
    costs: dict[str, list[float]] = {name: [] for name in trees}
    for i in range(rounds):
        for name, tree in list(trees.items())[:: 1 if i % 2 == 0 else -1]:
            costs[name] += recorder_cost(tree, 3)
    print("\nrecorder: CPU per chat outcome (20,000 outcomes a run, 200 per 50 ms tick, fsync batch)\n")
    for name, values in costs.items():
        print(f"  {name:<14} min {min(values):.2f} us, median {statistics.median(values):.2f} us  "
              f"{[round(v, 2) for v in values]}")
    return 0


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of processes, by role: a gateway's processes
    (main, workers), and its relay or a load publisher."""
    out = {"gateway": 0.0, "relay": 0.0}
    for p in pids:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
            out["relay" if b"relay" in cmdline or b"jetstream_load" in cmdline else "gateway"] += process_cpu(p)
    return out


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def box_idle() -> tuple[int, int]:
    """Idle (with iowait) and total jiffies of the machine so far, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return ticks[3] + ticks[4], sum(ticks)


# The conditions compared, in round order: which gateway serves, and with what beside it.
CONDITIONS = {"on": "events on",
              "spool": "events on, NATS unreachable (spool only)",
              "jetstream": "events off + the same JetStream load from a minimal publisher",
              "off": "events off"}


# With --baseline: the same two gateways from the other checkout, beside this one's.
BASELINE = {"base-on": "events on, baseline checkout",
            "base-spool": "events on, NATS unreachable (spool only), baseline checkout"}


def load_publisher(url: str, rate: float) -> subprocess.Popen[bytes]:
    """tests/perf/jetstream_load.py publishing `rate` messages per second to the NATS at `url`."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    proc = subprocess.Popen([sys.executable, "-m", "tests.perf.jetstream_load", host, port, f"{rate:.0f}"],
                            cwd=procs.ROOT, env=procs.child_env())
    time.sleep(0.5)  # started and publishing
    return proc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (e.g. a `git worktree` of an older commit) measured beside this one")
    parser.add_argument("--recorder", action="store_true", help="only the recorder's CPU per outcome")
    args = parser.parse_args()
    if args.recorder:
        return recorder_main(args.baseline, args.rounds)
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    work = scratch_dir("bench-ev-")  # state, logs and NATS store of this run
    up_port = procs.free_port()
    upstream = start_nginx(work, up_port) if shutil.which("nginx") else start_python_upstream(up_port)
    nats = EmbeddedNats(work / "nats")
    nats.start()
    nats_pid = nats.pid
    assert nats_pid is not None
    envs = {"on": {"APPLIANCE_NATS_URL": nats.url},
            "spool": {"APPLIANCE_NATS_URL": f"nats://127.0.0.1:{procs.free_port()}"},  # nobody listens there
            "off": {"APPLIANCE_EVENTS__ENABLED": "false"}}
    gateways = {name: start_appliance(work, name, up_port, **env) for name, env in envs.items()}
    labels = dict(CONDITIONS)
    if args.baseline is not None:
        for name, of in (("base-on", "on"), ("base-spool", "spool")):
            gateways[name] = start_appliance(work, name, up_port, tree=args.baseline.resolve(),
                                             APPLIANCE_NATS_URL=envs[of]["APPLIANCE_NATS_URL"])
        labels = {"on": CONDITIONS["on"], "base-on": BASELINE["base-on"], "spool": CONDITIONS["spool"],
                  "base-spool": BASELINE["base-spool"], "jetstream": CONDITIONS["jetstream"], "off": CONDITIONS["off"]}
    conditions = {name: gateways["off" if name == "jetstream" else name] for name in labels}
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello"}]}
    rps: dict[str, list[float]] = {name: [] for name in conditions}
    # Per round, while wrk runs: CPU per chat (microseconds) of the gateway's processes, its
    # relay (or the load publisher) and nats-server, and the machine's idle share.
    cpu: dict[str, list[tuple[float, float, float]]] = {name: [] for name in conditions}
    idle: dict[str, list[float]] = {name: [] for name in conditions}
    try:
        for _, port in gateways.values():
            wrk(f"http://127.0.0.1:{port}/v1/chat/completions", body, 32, 2, {})
        for i in range(args.rounds):
            order = list(conditions.items())
            for name, (proc, port) in order if i % 2 == 0 else order[::-1]:  # no condition always first
                # Two events per chat at the rate the events-on gateway served last.
                load = load_publisher(nats.url, 2 * rps["on"][-1]) if name == "jetstream" else None
                pids = with_children(proc.pid) + ([load.pid] if load else [])
                before, nats_before, idle_before = cpu_seconds(pids), process_cpu(nats_pid), box_idle()
                result = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", body, 32, args.seconds, {})
                after, nats_after, idle_after = cpu_seconds(pids), process_cpu(nats_pid), box_idle()
                if load:
                    load.kill()
                    load.wait()
                chats = result["rps"] * args.seconds
                rps[name].append(result["rps"])
                cpu[name].append(((after["gateway"] - before["gateway"]) / chats * 1e6,
                                  (after["relay"] - before["relay"]) / chats * 1e6,
                                  (nats_after - nats_before) / chats * 1e6))
                idle[name].append((idle_after[0] - idle_before[0]) / max(1, idle_after[1] - idle_before[1]) * 100)
    finally:
        for proc, _ in gateways.values():
            procs.stop(proc)
        upstream.terminate()
    status = read_status(work / "on" / "spool") or {}  # the baseline's relay publishes its own
    left = sum(pending_bytes(d) for d in (work / "on" / "spool").iterdir() if d.is_dir())
    rows: list[tuple[str, str]] = []
    med_off = statistics.median(rps["off"])
    for name, label in labels.items():
        med = statistics.median(rps[name])
        # Each round against the events-off round next to it: drift between rounds cancels out.
        paired = statistics.median((r - o) / o * 100 for r, o in zip(rps[name], rps["off"], strict=True))
        gateway_us, relay_us, nats_us = (statistics.median(c[k] for c in cpu[name]) for k in range(3))
        rows.append((f"{label}: RPS (median of rounds)", f"{med:.0f}  {[round(x) for x in rps[name]]}"))
        if name != "off":
            rows.append(("  against events off: medians | paired rounds",
                         f"{(med - med_off) / med_off * 100:+.1f}% | {paired:+.1f}%"))
        rows.append(("  CPU per chat: gateway | relay or load publisher | nats-server",
                     f"{gateway_us:.0f} | {relay_us:.1f} | {nats_us:.1f} us; machine idle "
                     f"{statistics.median(idle[name]):.0f}%"))
    rows.append(("events published by the relay (2 per chat)", f"{status.get('published')}, spool bytes left {left}"))

    nats.stop()
    # The persister drains a backlog of its own, in a fresh store: only the events counted.
    nats = EmbeddedNats(work / "nats-persist")
    nats.start()
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
    print(f"\nevents benchmark: 1 worker per gateway, 32 connections, {args.seconds}s x {args.rounds} rounds, "
          "nginx upstream\n")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
