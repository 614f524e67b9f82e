"""Relay cost: CPU per event while the relay drains a spooled backlog into JetStream.

    python -m tests.perf.bench_relay [--records 20000] [--runs 3]

Fills one spool slot with chat outcomes (two events each), then times a relay publishing
them all to an embedded NATS. Prints wall time and the relay's own CPU (user + system) per
event for each run and their median: the relay's share of the events-on cost that
bench_events measures as gateway RPS (figures: docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import time
from pathlib import Path

from appliance.embedded.nats import EmbeddedNats
from appliance.events.relay import Relay
from tests.perf.bench_events import spool
from tests.perf.scratch import scratch_dir


async def drain(root: Path, url: str, events: int) -> None:
    relay = Relay(root, url, batch=512, publish_timeout_s=5, duplicate_window_s=7200)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    while relay.status.published < events and not task.done():
        await asyncio.sleep(0.01)
    stop.set()
    await task


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    events = 2 * args.records
    rows = []
    for run in range(args.runs):
        work = scratch_dir("bench-relay-")
        nats = EmbeddedNats(work / "nats")
        nats.start()
        try:
            asyncio.run(spool(work / "spool", args.records))
            wall, cpu = time.perf_counter(), cpu_s()
            asyncio.run(drain(work / "spool", nats.url, events))
            wall, cpu = time.perf_counter() - wall, cpu_s() - cpu
        finally:
            nats.stop()
            shutil.rmtree(work, ignore_errors=True)
        rows.append((wall, cpu / events * 1e6))
        print(f"  run {run + 1}: {events} events in {wall:.2f} s, {events / wall:,.0f} events/s, "
              f"relay CPU {cpu / events * 1e6:.1f} us/event")
    print(f"\nrelay benchmark: {args.records} chat records ({events} events), batch 512, embedded NATS\n")
    print(f"  median events/s          {statistics.median(events / w for w, _ in rows):,.0f}")
    print(f"  median relay CPU/event   {statistics.median(c for _, c in rows):.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
