"""Knowledge benchmark: embedding and ingest throughput, search latency at 100,000 chunks,
and HNSW recall@10 against exact search for several ef_search values.

    python -m tests.perf.bench_knowledge [--chunks 100000] [--queries 200] [--cache DIR]

The corpus is generated (sentences of words drawn from the embedder's vocabulary, with a
topic word shared by neighbours) and embedded with the real in-process model; embeddings are
cached under --cache so a re-run skips the ~4 minutes that takes. Search is timed through
KnowledgeService, as the API runs it: query embedding, SQL, fusion, rerank. Bars (issue 3):
hybrid p50 < 25 ms, hybrid + rerank(top 20) p50 < 80 ms, recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

from appliance.config import load_settings
from appliance.db.migrate import migrate
from appliance.embedded.postgres import EmbeddedPostgres
from appliance.inference.wiring import Inference
from appliance.rag.wiring import build_knowledge

WS = "bench"


def corpus(n: int, vocab: list[str], seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    topics = rng.sample(vocab, 500)
    out = []
    for i in range(n):
        topic = topics[(i // 20) % len(topics)]
        words = [rng.choice(vocab) for _ in range(rng.randint(18, 40))]
        words.insert(rng.randrange(len(words)), topic)
        out.append(" ".join(words).capitalize() + ".")
    return out


async def embed_all(inference: Inference, texts: list[str], cache: Path) -> np.ndarray:
    key = hashlib.sha256(("\n".join(texts[:50]) + str(len(texts))).encode()).hexdigest()[:16]
    path = cache / f"emb-{key}.npy"
    if path.exists():
        return np.load(path)
    vectors: list[list[float]] = []
    started = time.perf_counter()
    for i in range(0, len(texts), 256):
        vectors.extend(await inference.embedder.embed(texts[i:i + 256]))
        if i and i % 10240 == 0:
            rate = i / (time.perf_counter() - started)
            print(f"  embedded {i}/{len(texts)} ({rate:.0f}/s)", flush=True)
    arr = np.asarray(vectors, dtype=np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return arr


def load(url: str, texts: list[str], vectors: np.ndarray) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM documents WHERE workspace = %s", (WS,))
        conn.execute("DROP INDEX IF EXISTS document_chunks_embedding_hnsw")
        with conn.cursor().copy("COPY documents (workspace, document_id, content_hash, chunk_count, chars) FROM STDIN") as cp:
            for d in range(0, len(texts), 10):
                cp.write_row((WS, f"doc-{d // 10}", "x", 10, 0))
        with conn.cursor().copy("COPY document_chunks (workspace, document_id, chunk_index, content, content_hash,"
                                " embedding) FROM STDIN") as cp:
            for i, (text, vec) in enumerate(zip(texts, vectors, strict=True)):
                cp.write_row((WS, f"doc-{i // 10}", i % 10, text, "x", "[" + ",".join(f"{x:.6f}" for x in vec) + "]"))
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("CREATE INDEX document_chunks_embedding_hnsw ON document_chunks"
                     " USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
        conn.execute("ANALYZE document_chunks")
    return time.perf_counter() - started


def recall(url: str, queries: np.ndarray, ef: int) -> tuple[float, float]:
    hits, lat = 0, []
    with psycopg.connect(url, autocommit=True) as conn:
        from pgvector.psycopg import register_vector
        register_vector(conn)
        for q in queries:
            conn.execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
            exact = {r[0] for r in conn.execute(
                "SELECT id FROM document_chunks WHERE workspace = %s ORDER BY embedding <=> %s LIMIT 10", (WS, q))}
            conn.execute(f"SET enable_indexscan = on; SET hnsw.ef_search = {ef}; SET hnsw.iterative_scan = relaxed_order")
            t = time.perf_counter()
            approx = {r[0] for r in conn.execute(
                "SELECT id FROM document_chunks WHERE workspace = %s ORDER BY embedding <=> %s LIMIT 10", (WS, q))}
            lat.append((time.perf_counter() - t) * 1000)
            hits += len(exact & approx)
    return hits / (10 * len(queries)), statistics.median(lat)


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p))]


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-kn-"))
    settings = load_settings(state_dir=work)
    inference = Inference(settings)
    await inference.start()
    vocab = [w for w in inference.loader.tokenizer.get_vocab() if w.isalpha() and len(w) >= 4]
    rows: list[tuple[str, str]] = []

    batch = corpus(32 * 20, vocab, seed=1)
    t = time.perf_counter()
    for i in range(0, len(batch), 32):
        await inference.embedder.embed(batch[i:i + 32])
    rows.append(("embedding throughput (batch 32)", f"{len(batch) / (time.perf_counter() - t):.0f} texts/s"))

    with EmbeddedPostgres(work / "pg", delete_on_stop=True) as pg:
        migrate(pg.url, {"embedding_dim": inference.embedder.dimensions})
        settings = settings.model_copy(update={"database_url": pg.url})
        service, store = build_knowledge(settings, inference.embedder, inference.reranker)
        await store.open()
        docs = [" ".join(corpus(12, vocab, seed=100 + d)) for d in range(60)]
        t = time.perf_counter()
        chunks = 0
        for d, text in enumerate(docs):
            chunks += (await service.put_document("ingest", f"d{d}", text)).chunks
        rows.append(("ingest throughput (chunk, embed, store)", f"{chunks / (time.perf_counter() - t):.0f} chunks/s"))

        texts = corpus(args.chunks, vocab)
        vectors = await embed_all(inference, texts, Path(args.cache))
        rows.append((f"bulk load + HNSW build, {args.chunks} chunks", f"{load(pg.url, texts, vectors):.0f} s"))

        rng = random.Random(3)
        queries = [" ".join(rng.sample(t.rstrip(".").split(), 6)) for t in rng.sample(texts, args.queries)]
        for label, kw in (("dense", {"mode": "dense"}), ("text", {"mode": "text"}), ("hybrid", {"mode": "hybrid"}),
                          ("hybrid + rerank top 20", {"mode": "hybrid", "rerank": True})):
            lat = []
            for q in queries:
                t = time.perf_counter()
                await service.search(WS, q, top_k=10, **kw)  # type: ignore[arg-type]
                lat.append((time.perf_counter() - t) * 1000)
            rows.append((f"search {label}: p50 / p99", f"{statistics.median(lat):.1f} / {pct(lat, 0.99):.1f} ms"))
        await store.close()

        qvecs = np.asarray(await inference.embedder.embed(queries[:100]), dtype=np.float32)
        for ef in (40, 100, 200):
            r, med = recall(pg.url, qvecs, ef)
            rows.append((f"HNSW recall@10, ef_search={ef} (SQL p50)", f"{r:.3f} ({med:.1f} ms)"))
    await inference.close()
    print(f"\nknowledge benchmark: {args.chunks} chunks, {args.queries} queries, embedder "
          f"{inference.loader.files.model_id}\n")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "appliance-bench"))
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
