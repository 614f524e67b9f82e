"""Qdrant's engine in process (Qdrant Edge), on bench_vector_stores.py's corpus and queries.

    pip install qdrant-edge-py   # benchmark only (Apache-2.0): not a runtime or test dependency
    nice -n 10 python tests/perf/bench_qdrant_edge.py [--chunks 100000] [--qps 10,100,1000] [--seconds 12]

Not a Qdrant server: the server ships as a binary or a container image, neither of which
this machine can fetch (docs/adr-vector-store.md). Qdrant Edge is the same storage and HNSW
code as a library in this process, with no HTTP or gRPC hop, so it shows what Qdrant's index
costs and finds, not what a deployed Qdrant would answer at. Same synthetic vectors, chunk
texts (as payload), queries and HNSW settings as bench_vector_stores.py (m 24, ef_construct
128, hnsw_ef 250, cosine); recall@10 against exact search; the open loop calls the shard
from a pool of 2 threads (the machine's cores), latency from the scheduled send time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from tests.perf.bench_knowledge import DIM, Text, pct, synthetic_vectors
from tests.perf.bench_vector_stores import (
    EF_SEARCH,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    K,
    add_load_arguments,
    du,
    exact_top,
    fmt_ms,
    memory_mib,
    open_loop,
)


def build(qe: Any, path: Path, texts: list[str], vectors: np.ndarray) -> Any:
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCTION, full_scan_threshold=10_000))
    shard = qe.EdgeShard.create(str(path), config)
    for i in range(0, len(texts), 1000):
        shard.update(qe.UpdateOperation.upsert_points([
            qe.Point(j, vectors[j].tolist(), {"text": texts[j]}) for j in range(i, min(len(texts), i + 1000))]))
    shard.optimize()  # builds the HNSW segments, blocking
    shard.flush()
    return shard


async def run(args: argparse.Namespace, tmp: Path) -> None:
    import qdrant_edge as qe  # benchmark only: pip install qdrant-edge-py

    texts = Text(seed=3).passages(args.chunks, 150)
    corpus = synthetic_vectors(args.chunks, seed=2, spread=args.spread)
    queries = synthetic_vectors(args.queries, seed=99, spread=args.spread)
    truth = exact_top(corpus, queries, K)
    rss0, _ = memory_mib([os.getpid()])
    started = time.perf_counter()
    shard = build(qe, tmp / "shard", texts, corpus)
    build_s = time.perf_counter() - started
    params = qe.SearchParams(hnsw_ef=EF_SEARCH)

    def search(i: int) -> list[int]:
        points = shard.query(qe.QueryRequest(limit=K, query=qe.Query.Nearest(queries[i].tolist()),
                                             with_payload=True, params=params))
        return [int(p.id) for p in points]

    found, times = 0, []
    for i, expected in enumerate(truth):
        t = time.perf_counter()
        got = search(i)
        times.append((time.perf_counter() - t) * 1000)
        found += len(set(got) & set(expected.tolist()))
    recall = found / (K * len(truth))

    pool = ThreadPoolExecutor(2)
    loop = asyncio.get_running_loop()

    async def call(i: int) -> list[int]:
        return await loop.run_in_executor(pool, search, i)

    print(f"qdrant-edge-py: {args.chunks} points in {build_s:.0f} s; closed loop p50 {statistics.median(times):.1f} ms,"
          f" recall@10 {recall:.3f}")
    print()
    print("| store | mode | offered QPS | achieved QPS | answered | p50 ms | p95 ms | p99 ms | recall@10 | process CPU ms/query |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for qps in (float(x) for x in args.qps.split(",")):
        lat, _failed, achieved, _, cpu_ms = await open_loop(call, len(queries), qps, args.seconds, args.drain,
                                                          lambda: [os.getpid()])
        done = [x for x in lat if not math.isinf(x)]
        p50, p95, p99 = (fmt_ms(pct(lat, q), done) for q in (50, 95, 99))
        print(f"| qdrant edge (in process) | dense | {qps:g} | {achieved:.0f} | {len(done)}/{len(lat)} | {p50} | {p95} |"
              f" {p99} | {recall:.3f} | {cpu_ms:.2f} |", flush=True)
        await asyncio.sleep(2)
    pool.shutdown()
    rss, pss = memory_mib([os.getpid()])
    shard.close()
    print()
    print(f"build {build_s:.0f} s; disk {du(tmp / 'shard') / 1e6:.0f} MB; process RSS {rss:.0f} MiB"
          f" ({rss - rss0:+.0f} MiB over the corpus arrays), PSS {pss:.0f} MiB; closed-loop p50"
          f" {statistics.median(times):.2f} ms, p99 {pct(times, 99):.2f} ms over {len(times)} queries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_load_arguments(parser)
    parser.add_argument("--spread", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-qdrant-edge-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
