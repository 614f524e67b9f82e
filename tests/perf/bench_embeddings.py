"""Embedding throughput in process: texts/s at batch 32, and batch-1 latency.

    python tests/perf/bench_embeddings.py [--texts 320] [--runs 5] [--threads 0]

Prints a table of medians over `runs`. The model is the default all-MiniLM-L6-v2 INT8.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.config import KnowledgeSettings
from appliance.inference.local import load_local_models

SENTENCE = ("the gateway routes requests to local models and retrieves context from the user's own documents "
            "with hybrid search over postgres and pgvector then reranks candidates by late interaction")
WORDS = SENTENCE.split(" ")


def sample_texts(n: int, words: int = 24) -> list[str]:
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(words)) + f" #{i}" for i in range(n)]


async def bench(texts: int, runs: int, threads: int, batch: int, words: int) -> None:
    models = load_local_models(KnowledgeSettings(embed_threads=threads, embed_batch_size=batch))
    embedder = models.embedder
    corpus = sample_texts(texts, words)
    await embedder.embed(corpus[:batch])  # warm-up
    rates, singles = [], []
    for _ in range(runs):
        start = time.perf_counter()
        for i in range(0, len(corpus), batch):
            await embedder.embed(corpus[i:i + batch])
        rates.append(len(corpus) / (time.perf_counter() - start))
        start = time.perf_counter()
        for text in corpus[:32]:
            await embedder.embed([text])
        singles.append((time.perf_counter() - start) / 32 * 1000)
    tokens = await embedder.count_tokens(corpus) / len(corpus)
    models.close()
    print(f"{'measure':<36}{'median':>12}")
    print(f"{f'embed texts/s, batch {batch}':<36}{statistics.median(rates):>12.0f}")
    print(f"{'embed latency ms, batch 1':<36}{statistics.median(singles):>12.2f}")
    print(f"({texts} texts of ~{tokens:.0f} tokens, {runs} runs, threads={threads or 'auto'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--texts", type=int, default=320)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--words", type=int, default=24, help="words per text (24 is about 34 tokens)")
    args = parser.parse_args()
    asyncio.run(bench(args.texts, args.runs, args.threads, args.batch, args.words))


if __name__ == "__main__":
    main()
