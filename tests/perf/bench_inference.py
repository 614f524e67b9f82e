"""gRPC inference vs in process: per-call latency and throughput (batch 1 and 32), the
in-process MaxSim rerank, and what a fallback costs with the breaker closed (each call
tries the dead service first) vs open (it does not).

    python tests/perf/bench_inference.py [--runs 30] [--threads 1]

Starts `appliance inference` as a child process on free ports; prints a table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.config import KnowledgeSettings
from appliance.domain.breaker import Breaker
from appliance.inference.fallback import Fallback, FallbackEmbedder
from appliance.inference.grpc_client import GrpcInference
from appliance.inference.local import load_local_models
from appliance.inference.maxsim import MaxSimReranker
from tests import procs
from tests.perf.bench_embeddings import sample_texts


async def median_ms(call: Callable[[], Awaitable[object]], runs: int) -> float:
    await call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def row(name: str, value: float, unit: str) -> None:
    print(f"{name:<52}{value:>12.2f}  {unit}")


async def bench(runs: int, threads: int) -> None:
    models = load_local_models(KnowledgeSettings(embed_threads=threads))
    local = models.embedder
    port, health = procs.free_port(), procs.free_port()
    env = procs.child_env(APPLIANCE_KNOWLEDGE__EMBED_THREADS=str(threads), APPLIANCE_LOG_LEVEL="warning")
    proc = procs.spawn(["-m", "appliance", "inference", "--listen", f"127.0.0.1:{port}",
                        "--health-listen", f"127.0.0.1:{health}"], port, env=env, timeout=60)
    remote = GrpcInference(f"127.0.0.1:{port}", deadline_s=30, max_message_bytes=64 << 20)
    texts = sample_texts(32)
    print(f"{'measure':<52}{'median':>12}")
    try:
        for batch in (1, 32):
            items = texts[:batch]
            g = await median_ms(lambda items=items: remote.embed_array(items), runs)
            loc = await median_ms(lambda items=items: local.embed(items), runs)
            row(f"Embed batch {batch}: gRPC latency", g, "ms")
            row(f"Embed batch {batch}: in-process latency", loc, "ms")
            row(f"Embed batch {batch}: gRPC throughput", batch / g * 1000, "texts/s")
            row(f"Embed batch {batch}: in-process throughput", batch / loc * 1000, "texts/s")

        query = "how does the gateway retrieve context from documents"
        candidates = sample_texts(20, words=60)
        tokens = await local.token_vectors(candidates)
        avg_tokens = sum(t.shape[0] for t in tokens) / len(tokens)
        reranker = MaxSimReranker(local)
        cached = MaxSimReranker(local, cache_entries=64)
        await cached.rerank(query, candidates)
        row(f"in-process MaxSim rerank, 20 x {avg_tokens:.0f}-token candidates",
            await median_ms(lambda: reranker.rerank(query, candidates), runs), "ms")
        row("in-process MaxSim rerank, same, candidates cached",
            await median_ms(lambda: cached.rerank(query, candidates), runs), "ms")
    finally:
        procs.stop(proc)

    # The service is gone now: every remote attempt fails with connection refused.
    one = texts[:1]
    closed = FallbackEmbedder(Fallback(remote, Breaker(cooldown_s=0, failure_threshold=10**9, name="bench-closed")),
                              local)
    opened = FallbackEmbedder(Fallback(remote, Breaker(cooldown_s=3600, name="bench-open")), local)
    await opened.embed(one)  # opens it
    base = await median_ms(lambda: local.embed(one), runs)
    row("in process only, batch 1", base, "ms")
    row("fallback, breaker closed (service down, refused)", await median_ms(lambda: closed.embed(one), runs), "ms")
    row("fallback, breaker open", await median_ms(lambda: opened.embed(one), runs), "ms")
    print(f"({runs} runs each; threads={threads}; a hung service costs deadline_s per call while closed)")
    await remote.close()
    models.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the fallback rows would log a warning per call
    asyncio.run(bench(args.runs, args.threads))


if __name__ == "__main__":
    main()
