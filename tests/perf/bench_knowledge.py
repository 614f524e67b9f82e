"""Knowledge benchmark: ingest throughput, search latency at N chunks, HNSW recall@10.

    python tests/perf/bench_knowledge.py [--chunks 100000] [--queries 200] [--ef 100,200,250,400]
                                         [--ingest-docs 30] [--database-url URL]

What is real and what is synthetic:
- ingest: the real path (chunker on the model's tokenizer, in-process ONNX embeddings,
  one transaction per document) over generated ~1,000-word documents -> chunks/s.
- the N-chunk corpus: generated text (words drawn Zipf-like from the tokenizer's
  vocabulary, ~150 words = ~200 tokens per chunk, so full-text search meets common and rare
  terms), bulk-loaded with binary COPY and indexed afterwards with the migration's HNSW
  definition. Vectors: the real model's embeddings of each chunk's first 32 words by default
  (cached under --cache: the first run embeds 100k heads, ~14 min here; embedding whole
  chunks would dominate the run), or with --synthetic-vectors a mixture of 1,000 Gaussian
  clusters on the unit sphere, for a quick run only: recall over held-out synthetic vectors
  looks perfect (1.000 at ef_search 100, against 0.889 with real vectors on 2026-12-01),
  and the service's queries, embedded for real, land away from every synthetic cluster.
- latency: `KnowledgeService.search` in process, as RAG chat calls it: the query embedded by
  the real model, HNSW + full text on PostgreSQL, MaxSim on the top 20 from token vectors
  stored at ingest (synthetic ones for the corpus; the query's are real), and for contrast
  the reranker encoding the 20 candidates' text at query time.
- recall@10: held-out vectors of the same distribution (synthetic, or real embeddings of
  other generated text), HNSW (with the store's session settings) against an exact
  sequential scan, for each ef_search.

Starts its own embedded PostgreSQL in a temporary directory unless --database-url is given
(that database must be empty or hold only this benchmark's workspaces).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

from appliance.config import KnowledgeSettings, Settings
from appliance.db.migrate import migrate
from appliance.db.token_codec import compact
from appliance.embedded.postgres import EmbeddedPostgres
from appliance.inference.wiring import Inference
from appliance.rag.wiring import knowledge_service, knowledge_store

WS = "bench"
DIM = 384
HNSW = ("CREATE INDEX document_chunks_embedding_hnsw ON document_chunks"
        " USING hnsw (embedding vector_cosine_ops) WITH (m = {m}, ef_construction = {ef_construction})")


def vocabulary() -> list[str]:
    """Whole words from the embedding model's own tokenizer vocabulary, in a fixed shuffle."""
    vocab: dict[str, int] = Inference(Settings()).loader.tokenizer.get_vocab()
    words = sorted((w for w in vocab if w.isalpha() and w.isascii() and len(w) >= 4), key=vocab.__getitem__)
    rng = np.random.default_rng(7)
    return [words[i] for i in rng.permutation(len(words))]


class Text:
    """Word salad with a Zipf-like word distribution (rank r has weight 1/(r+10))."""

    def __init__(self, seed: int) -> None:
        self.words = np.array(vocabulary(), dtype=object)
        weights = 1.0 / (np.arange(len(self.words)) + 10.0)
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def sentence(self, n: int) -> str:
        return " ".join(self.rng.choice(self.words, size=n, p=self.p)).capitalize() + "."

    def passages(self, count: int, words: int) -> list[str]:
        """`count` passages of `words` words in sentences of 8-19 words (drawn in bulk)."""
        drawn = self.rng.choice(self.words, size=(count, words), p=self.p)
        cuts = np.cumsum(self.rng.integers(8, 20, size=words))
        out = []
        for row in drawn:
            parts, start = [], 0
            for end in cuts:
                if start >= words:
                    break
                parts.append(" ".join(row[start:end]).capitalize() + ".")
                start = int(end)
            out.append(" ".join(parts))
        return out

    def document(self, words: int) -> str:
        sections = self.passages((words + 119) // 120, 120)
        return "\n\n".join(f"## Section {i}\n\n{p}" for i, p in enumerate(sections, start=1))


def synthetic_vectors(n: int, seed: int, clusters: int = 1000, spread: float = 1.0) -> np.ndarray:
    """Unit vectors around `clusters` random centres; at spread 1.0 a point's cosine to its
    centre is ~0.7 and to a sibling ~0.5, so the 10 nearest are close calls for HNSW."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1).standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    picks = rng.integers(0, clusters, size=n)
    vectors = centres[picks] + spread * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def real_vectors(inference: Inference, texts: list[str], cache: Path, row: Callable[[str], None]) -> np.ndarray:
    """Real embeddings of each chunk's first 32 words (all of them would dominate the run), cached."""
    heads = [" ".join(t.split()[:32]) for t in texts]
    key = hashlib.sha256(("\n".join(heads[:50]) + str(len(heads))).encode()).hexdigest()[:16]
    path = cache / f"bench-knowledge-{key}.npy"
    if path.exists():
        return np.asarray(np.load(path), dtype=np.float32)
    out = np.zeros((len(heads), DIM), dtype=np.float32)
    started = time.perf_counter()
    for i in range(0, len(heads), 256):
        out[i:i + 256] = await inference.embedder.embed(heads[i:i + 256])
        if (i // 256) % 40 == 39:
            row(f"  embedded {i + 256} ({(i + 256) / (time.perf_counter() - started):.0f}/s)")
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def load_corpus(url: str, texts: list[str], vectors: np.ndarray, row: Callable[[str], None],
                token_vectors: bool, hnsw: tuple[int, int] = (24, 128)) -> None:
    """n chunks in workspace WS (10 per document), bulk: drop the HNSW index, COPY, re-index.
    With `token_vectors`, each chunk also gets 200 synthetic token vectors in the stored format
    (`db/token_codec.compact`, as ingest writes them; from a pool of 256 random ones: only their
    size and format matter for latency), in an UNLOGGED table."""
    n = len(texts)
    docs = (n + 9) // 10
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("DROP INDEX IF EXISTS document_chunks_embedding_hnsw")
        started = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy("COPY documents (workspace, document_id, content_hash, metadata, chunk_count, chars)"
                          " FROM STDIN") as copy:
                for d in range(docs):
                    copy.write_row((WS, f"doc-{d:06d}", "x", "{}", min(10, n - d * 10), 0))
            with cur.copy("COPY document_chunks (workspace, document_id, chunk_index, content, content_hash,"
                          " metadata, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["text", "text", "int4", "text", "text", "jsonb", "vector"])
                for i, content in enumerate(texts):
                    copy.write_row((WS, f"doc-{i // 10:06d}", i % 10, content,
                                    hashlib.sha256(content.encode()).hexdigest(), Jsonb({}), vectors[i]))
                    if (i + 1) % 20000 == 0:
                        row(f"  loaded {i + 1} chunks ({time.perf_counter() - started:.0f} s)")
        row(f"  COPY of {n} chunks (with tsvector): {time.perf_counter() - started:.1f} s")
        # Statistics first: the foreign-key checks of the next COPY are planned from them,
        # and planned on an "empty" document_chunks they scan it once per row (hours).
        conn.execute("ANALYZE document_chunks")
        if token_vectors:
            started = time.perf_counter()
            rng = np.random.default_rng(5)
            pool = [compact(rng.standard_normal((200, DIM)).astype(np.float32)) for _ in range(256)]
            conn.execute("ALTER TABLE chunk_token_vectors SET UNLOGGED")
            with conn.cursor() as cur, cur.copy(
                    "COPY chunk_token_vectors (workspace, document_id, chunk_index, vectors, format)"
                    " FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["text", "text", "int4", "bytea", "int2"])
                for i in range(n):  # format 2: the store reads no other (sql/0004)
                    copy.write_row((WS, f"doc-{i // 10:06d}", i % 10, pool[i % 256], 2))
            size = sum(len(pool[i % 256]) for i in range(n))
            row(f"  COPY of {n} token-vector rows ({size / 1e6:.0f} MB): {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(HNSW.format(m=hnsw[0], ef_construction=hnsw[1]))
        conn.execute("ANALYZE document_chunks")
        row(f"  HNSW index build (m={hnsw[0]}, ef_construction={hnsw[1]}): {time.perf_counter() - started:.1f} s")


def recall(url: str, queries: np.ndarray, efs: Sequence[int], k: int = 10) -> dict[int, tuple[float, float]]:
    """ef_search -> (recall@k against exact, p50 ms of the SQL alone)."""
    sql = ("SELECT id FROM document_chunks WHERE workspace = %s ORDER BY embedding <=> %s LIMIT %s")
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("SET enable_indexscan = off")
        exact = [{r[0] for r in conn.execute(sql, (WS, q, k))} for q in queries]
        conn.execute("SET enable_indexscan = on")
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        out: dict[int, tuple[float, float]] = {}
        for ef in efs:
            conn.execute(f"SET hnsw.ef_search = {int(ef)}")
            found, times = 0, []
            for q, truth in zip(queries, exact, strict=True):
                t = time.perf_counter()
                got = {r[0] for r in conn.execute(sql, (WS, q, k))}
                times.append((time.perf_counter() - t) * 1000)
                found += len(got & truth)
            out[ef] = (found / (k * len(queries)), statistics.median(times))
    return out


async def timed(n: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    for i in range(min(5, n)):
        await call(-1 - i)  # warm-up
    times = []
    for i in range(n):
        t = time.perf_counter()
        await call(i)
        times.append((time.perf_counter() - t) * 1000)
    return times


async def run(args: argparse.Namespace, url: str) -> None:
    row = print
    migrate(url, {"embedding_dim": DIM})
    text = Text(seed=3)
    efs = [int(x) for x in args.ef.split(",")]
    knowledge = KnowledgeSettings(hnsw_ef_search=args.ef_search)
    settings = Settings(database_url=url, knowledge=knowledge)
    inference = Inference(settings)
    store = knowledge_store(settings)
    service = knowledge_service(settings, store, inference.embedder, inference.reranker)
    await store.open()
    try:
        # 1. ingest, the real path, with and without token vectors for rerank
        docs = [text.document(1000) for _ in range(args.ingest_docs)]
        await service.put_document("warmup", "w", docs[0])
        plain_service = knowledge_service(settings.model_copy(update={"knowledge": knowledge.model_copy(
            update={"rerank_token_vectors": False})}), store, inference.embedder, inference.reranker)
        ingest: dict[str, float] = {}
        for name, svc in (("with token vectors", service), ("without token vectors", plain_service)):
            started = time.perf_counter()
            chunks = 0
            for i, doc in enumerate(docs):
                chunks += (await svc.put_document(f"ingest-{len(ingest)}", f"doc-{i}", doc)).chunks
            ingest[name] = chunks / (time.perf_counter() - started)
            row(f"ingest {name}: {args.ingest_docs} documents, {chunks} chunks, {ingest[name]:.1f} chunks/s")
        started = time.perf_counter()
        for i, doc in enumerate(docs):
            await service.put_document("ingest-0", f"doc-{i}", doc)
        unchanged_ms = (time.perf_counter() - started) * 1000 / len(docs)

        # 2. the corpus
        texts = text.passages(args.chunks, 150)
        qtext = Text(seed=11)
        queries = [qtext.sentence(int(qtext.rng.integers(3, 9))) for _ in range(args.queries + 10)]
        if args.real_vectors:
            row(f"embedding {args.chunks} chunk heads (cached in {args.cache}) ...")
            vectors = await real_vectors(inference, texts, Path(args.cache), row)
            # held out: other chunk heads of the same generator, embedded for real
            held_out = np.asarray(await inference.embedder.embed(
                [" ".join(t.split()[:32]) for t in Text(seed=13).passages(args.recall_queries, 32)]), dtype=np.float32)
        else:
            vectors = synthetic_vectors(args.chunks, seed=2)
            held_out = synthetic_vectors(args.recall_queries, seed=99)
        row(f"loading {args.chunks} chunks into workspace '{WS}' ...")
        load_corpus(url, texts, vectors, row, args.token_vectors, (args.hnsw_m, args.hnsw_ef_construction))

        # 3. recall@10 and SQL latency per ef_search
        rec = recall(url, held_out, efs)

        # 4. service latency, as RAG chat sees it

        def search(mode: str, rerank: bool) -> Callable[[int], Awaitable[object]]:
            return lambda i: service.search(WS, queries[i], top_k=10, mode=mode, rerank=rerank)  # type: ignore[arg-type]
        lat = {
            "dense": await timed(args.queries, search("dense", False)),
            "text": await timed(args.queries, search("text", False)),
            "hybrid": await timed(args.queries, search("hybrid", False)),
            "hybrid + rerank top 20": await timed(args.queries, search("hybrid", True)),
        }
        if args.live_rerank_queries:
            lat["hybrid + rerank top 20, encoding candidates live"] = await timed(
                args.live_rerank_queries,
                lambda i: plain_service.search(WS, queries[i], top_k=10, mode="hybrid", rerank=True))
    finally:
        await store.close()
        await inference.close()

    print()
    print(f"| measure (at {args.chunks:,} chunks, ef_search={args.ef_search}) | p50 | p99 |")
    print("|---|---:|---:|")
    for name, times in lat.items():
        print(f"| search {name}, top 10 (ms) | {statistics.median(times):.1f} | {pct(times, 99):.1f} |")
    print()
    print("| measure | value |")
    print("|---|---:|")
    for name, rate in ingest.items():
        print(f"| ingest {name}, real path (chunks/s) | {rate:.1f} |")
    print(f"| re-ingest of an unchanged document (ms) | {unchanged_ms:.1f} |")
    for ef, (r, ms) in rec.items():
        print(f"| HNSW recall@10, ef_search={ef} (SQL p50 {ms:.1f} ms) | {r:.3f} |")
    kind = "real MiniLM embeddings of each chunk's first 32 words" if args.real_vectors else "synthetic clustered vectors"
    print(f"({args.queries} queries per mode, {args.recall_queries} for recall; corpus vectors: {kind})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--ef", default="100,200,250,400", help="ef_search values for the recall table")
    parser.add_argument("--ef-search", type=int, default=KnowledgeSettings().hnsw_ef_search,
                        help="the store's ef_search for the latency table")
    parser.add_argument("--ingest-docs", type=int, default=30, help="~1,000-word documents for the ingest rate")
    parser.add_argument("--live-rerank-queries", type=int, default=20,
                        help="queries for the rerank that encodes candidates at query time (slow)")
    parser.add_argument("--no-token-vectors", dest="token_vectors", action="store_false",
                        help="do not load the 7.7 GB of token vectors for 100k chunks")
    parser.add_argument("--synthetic-vectors", dest="real_vectors", action="store_false",
                        help="synthetic corpus vectors instead of the model's (quick, but not a user's latency)")
    parser.add_argument("--hnsw-m", type=int, default=24, help="index build parameter (the migration's: 24)")
    parser.add_argument("--hnsw-ef-construction", type=int, default=128,
                        help="index build parameter (the migration's: 128)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "appliance-bench"))
    parser.add_argument("--database-url", help="an existing database (default: an embedded one in a tmp dir)")
    args = parser.parse_args()
    if args.database_url:
        asyncio.run(run(args, args.database_url))
        return
    with tempfile.TemporaryDirectory(prefix="bench-knowledge-") as tmp, \
            EmbeddedPostgres(Path(tmp) / "pg", delete_on_stop=True) as pg:
        asyncio.run(run(args, pg.url))


if __name__ == "__main__":
    main()
