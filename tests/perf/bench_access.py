"""Access benchmark: the bare gateway against the full path (a key checked, rpm/tpm/budget
counted, metrics, events), the limit decision's cost, and the shared store's cost per sync.

    python -m tests.perf.bench_access [--seconds 8] [--rounds 3]

In one run, one worker each, nginx upstream (bench_gateway's), wrk at 32 connections,
non-streaming; the two gateways are measured in alternation, each round, medians shown:

    bare    no key, no events, no database
    events  events on (embedded NATS, the relay), no key: what the full path costs without access
    full    a catalog key with rpm, tpm and a budget (every request counted, x-ratelimit-*
            headers), events on (embedded NATS, the relay), the key store on an embedded
            PostgreSQL (its sync running every 0.25 s)

The bar (issue 15): full >= 4,000 RPS and within 15% of bare. Then, in process: the limit
decision (hash, lookup, rpm/tpm/budget, reservation, settlement, headers) in microseconds
per request; and one sync round trip to PostgreSQL (the store chosen) against NATS
JetStream key-value (the alternative: one compare-and-set per key and window).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tests import procs
from tests.perf.bench_gateway import start_appliance, start_nginx, wrk
from tests.perf.scratch import scratch_dir

SECRET = "appl-bench-0123456789abcdefghijklmnopqrstuvwxyz"
BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
KEY = (f'\n[[api_keys]]\nname = "bench"\nsha256 = "{hashlib.sha256(SECRET.encode()).hexdigest()}"\n'
       "rpm = 1000000000\ntpm = 1000000000\nbudget_usd = 1000000.0\n")


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants (Granian's worker, the relay, the inference child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds used so far by `pids`."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def decision_us(n: int = 100_000) -> float:
    """The whole per-request access work, in process: CPU microseconds per request."""
    from appliance.domain.access import AccessControl, KeyDirectory, NullAudit
    from appliance.domain.keys import KeyRecord
    from appliance.domain.limits import Limiter
    from appliance.domain.records import ChatOutcome, Usage

    key = KeyRecord("bench", hashlib.sha256(SECRET.encode()).hexdigest(), rpm=10**9, tpm=10**9, budget_usd=1e6)
    control = AccessControl(KeyDirectory([key]), Limiter(), NullAudit())
    outcomes = [ChatOutcome(f"c{i}", "m", "m", "b", "direct", False, (), "", None, Usage(9, 9), cost_usd=1e-6)
                for i in range(1000)]
    start = time.process_time()  # CPU time: on a shared, busy machine wall time says more about the neighbours
    for i in range(n):
        o = outcomes[i % 1000]
        caller = control.authenticate(hashlib.sha256(SECRET.encode()).hexdigest())
        control.admit(caller, o.correlation_id)
        control.reserve(caller, o.correlation_id, 16, 20)
        control.chat(o)
        control.headers(caller)
    return (time.process_time() - start) / n * 1e6


async def store_costs(pg_url: str, nats_url: str, keys: int, rounds: int = 200) -> tuple[float, float]:
    """Median ms of one sync of `keys` keys: PostgreSQL (one pipelined upsert) and NATS KV
    (a get and a compare-and-set per key and window, the way counters would be kept there)."""
    import nats

    from appliance.access.store import PgAccessStore
    from appliance.domain.limits import SyncBatch

    store = PgAccessStore(pg_url)
    await store.open()
    pg: list[float] = []
    minute = int(time.time() // 60)
    for _ in range(rounds):
        batch = SyncBatch([(f"k{i}", m, 1, 10) for i in range(keys) for m in (minute - 1, minute)], [])
        t = time.perf_counter()
        await store.sync(batch)
        pg.append((time.perf_counter() - t) * 1000)
    await store.close()
    nc = await nats.connect(nats_url)
    kv = await nc.jetstream().create_key_value(bucket="bench_limits")
    for i in range(keys):
        for m in (minute - 1, minute):
            await kv.put(f"k{i}.{m}", b"0,0")
    kvt: list[float] = []
    for _ in range(rounds // 4):
        t = time.perf_counter()
        for i in range(keys):
            for m in (minute - 1, minute):
                entry = await kv.get(f"k{i}.{m}")
                r, tok = (int(x) for x in (entry.value or b"0,0").split(b","))
                await kv.update(f"k{i}.{m}", f"{r + 1},{tok + 10}".encode(), last=entry.revision)
        kvt.append((time.perf_counter() - t) * 1000)
    await nc.close()
    return statistics.median(pg), statistics.median(kvt)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from appliance.db.migrate import migrate
    from appliance.embedded.nats import EmbeddedNats
    from appliance.embedded.postgres import EmbeddedPostgres

    work = scratch_dir("bench-access-")
    pg = EmbeddedPostgres(work / "pg", delete_on_stop=True)
    pg_url = pg.start()
    migrate(pg_url, {"embedding_dim": 384})
    nats_server = EmbeddedNats(work / "nats")
    nats_url = nats_server.start()
    up_port = procs.free_port()
    upstream = start_nginx(work, up_port)
    bare, bare_port = start_appliance(work, "bare", up_port)
    events, events_port = start_appliance(work, "events", up_port, APPLIANCE_NATS_URL=nats_url)
    full, full_port = start_appliance(work, "full", up_port, extra_catalog=KEY, APPLIANCE_NATS_URL=nats_url,
                                      APPLIANCE_DATABASE_URL=pg_url)
    gateways = {"bare": (bare, bare_port, {}), "events": (events, events_port, {}),
                "full": (full, full_port, {"Authorization": f"Bearer {SECRET}"})}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in gateways}
    try:
        time.sleep(2)
        for _ in range(args.rounds):
            for name, (proc, port, headers) in gateways.items():
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                wrk(url, BODY, 32, 2, headers)
                pids = tree_pids(proc.pid)
                extra = [nats_server.pid] if name != "bare" and nats_server.pid else []
                before, before_nats = cpu_s(pids), cpu_s(extra)
                run = wrk(url, BODY, 32, args.seconds, headers)
                served = run["rps"] * args.seconds
                run["cpu_us"] = (cpu_s(pids) - before) / served * 1e6
                run["nats_us"] = (cpu_s(extra) - before_nats) / served * 1e6
                runs[name].append(run)
        micro = decision_us()
        costs = {n: asyncio.run(store_costs(pg_url, nats_url, n)) for n in (1, 20)}
    finally:
        for proc, _, _ in gateways.values():
            procs.stop(proc)
        upstream.terminate()
        nats_server.stop()
        pg.stop()
    report(runs, micro, costs, args)
    return 0


def report(runs: dict[str, list[dict[str, float]]], micro: float, costs: dict[int, tuple[float, float]],
           args: Any) -> None:
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "errors", "cpu_us", "nats_us")}
           for n, rs in runs.items()}
    print(f"\n1 worker each, nginx upstream, wrk 32 connections, JSON, {args.seconds}s x {args.rounds} rounds "
          "(alternating), medians\n")
    print(f"{'path':<6}{'RPS':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'CPU us/req':>12}{'NATS us/req':>13}"
          "   rounds (RPS)")
    for name in ("bare", "events", "full"):
        m = med[name]
        print(f"{name:<6}{m['rps']:>9.0f}{m['p50']:>9.3f}{m['p99']:>9.3f}{m['errors']:>9.0f}{m['cpu_us']:>12.0f}"
              f"{m['nats_us']:>13.0f}   " + " ".join(f"{r['rps']:.0f}" for r in runs[name]))
    access = med["full"]["cpu_us"] - med["events"]["cpu_us"]
    print(f"\naccess alone (full - events, CPU per request): {access:.0f} us; events alone (events - bare): "
          f"{med['events']['cpu_us'] - med['bare']['cpu_us']:.0f} us")
    ratio = med["full"]["rps"] / med["bare"]["rps"]
    cpu = med["bare"]["cpu_us"] / med["full"]["cpu_us"]
    print(f"\nfull / bare RPS: {ratio:.3f} ({(1 - ratio) * 100:.1f}% lower); bar: >= 4,000 RPS and within 15%")
    print(f"bare / full CPU per request (the gateway's process tree, relay included): {cpu:.3f} "
          f"({(1 - cpu) * 100:.1f}% fewer requests per CPU second); as RPS on one free core: "
          f"bare {1e6 / med['bare']['cpu_us']:.0f}, full {1e6 / med['full']['cpu_us']:.0f}")
    print(f"limit decision (hash, lookup, rpm+tpm+budget, reserve, settle, headers): {micro:.2f} us CPU per request")
    print(f"\n{'keys':>5}{'PG sync ms':>12}{'NATS KV ms':>12}   (one sync round of every key's two windows)")
    for n, (pg_ms, kv_ms) in costs.items():
        print(f"{n:>5}{pg_ms:>12.3f}{kv_ms:>12.3f}")


if __name__ == "__main__":
    sys.exit(main())
