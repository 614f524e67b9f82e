"""pgvector against a dedicated vector database, under open-loop load, at N chunks.

    pip install chromadb        # benchmark only: not a runtime or test dependency
    nice -n 10 python tests/perf/bench_vector_stores.py [--chunks 100000] [--real-vectors]
        [--qps 10,100,1000] [--seconds 12] [--drain 20] [--queries 500] [--spread 1.0]

Both stores get the SAME corpus and are asked the SAME held-out queries:
- corpus: bench_knowledge.py's (generated ~200-token chunks; vectors synthetic, or with
  --real-vectors real MiniLM embeddings of each chunk's first 32 words, cached in --cache).
  pgvector: bulk COPY into the migrated schema, then the migration's HNSW (m 24,
  ef_construction 128), `hnsw.ef_search` 250 as the store sets it. Chroma: `chroma run` as
  its own server process, one collection with the same vectors and chunk texts, HNSW
  `max_neighbors` 24 (hnswlib's M), `ef_construction` 128, `ef_search` 250, cosine,
  added over its HTTP client in batches of its maximum batch size.
- queries: held-out chunk heads (32 words of other generated text), embedded ONCE up front
  (or synthetic vectors of the corpus's distribution): the model is not what is measured.
- pgvector calls are the store port's, as `KnowledgeService` makes them: dense is
  `PgKnowledgeStore.dense_search(k=10)`; hybrid is `dense_search(20)` and `text_search(20)`
  concurrently, fused by the domain's RRF, top 10 (the service's path without the model).
  Chroma: `AsyncCollection.query(n_results=10)` with documents and distances, over
  `chromadb.AsyncHttpClient`, at most --pool requests in flight (as pgvector's pool). Chroma's hybrid (`Search` with `Rrf` and sparse/BM25 ranks) is
  documented as Hosted Chroma only; a local server has `$contains` filters, not a ranking,
  so it has no hybrid row.
- open loop: request i is sent at t0 + i/QPS whether or not earlier ones have finished, and
  its latency is measured from that scheduled time, so queueing (in the pool, the server or
  this client's own event loop) shows. Each level runs --seconds; after the last send the
  level waits at most --drain s, and requests still unanswered then count as unfinished
  (their latency is "more than"; a percentile that lands on them prints as `>`). The pgvector
  pool's wait timeout is --drain too, so a request waits for a connection rather than failing.
  The load generator is this one Python process on the same 2 cores as the servers.
- recall@10: each store's top 10 against exact cosine search (numpy over the same vectors),
  closed loop over the query pool. For hybrid, against the same fusion of the exact dense
  top 20 and the same full-text top 20.
- memory: RSS and PSS (shared pages split) of each server's processes after the runs;
  disk: PostgreSQL's `document_chunks` with all its indexes (and the HNSW alone), Chroma's
  persistence directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import psycopg

from appliance.config import KnowledgeSettings, Settings
from appliance.db.migrate import migrate
from appliance.domain.knowledge import Hit, fuse
from appliance.embedded.postgres import EmbeddedPostgres
from appliance.inference.wiring import Inference
from appliance.rag.store import PgKnowledgeStore
from tests.perf.bench_knowledge import (
    DIM,
    WS,
    Text,
    load_corpus,
    pct,
    real_vectors,
    synthetic_vectors,
)

K = 10
CANDIDATES = 20  # RAG_CANDIDATES: per leg of hybrid
HNSW_M, HNSW_EF_CONSTRUCTION, EF_SEARCH = 24, 128, 250
COLLECTION = "bench-chunks"

Call = Callable[[int], Awaitable[list[int]]]


@dataclass
class Level:
    store: str
    mode: str
    offered: float
    sent: int
    latencies_ms: list[float]  # inf for unfinished or failed
    failed: int
    achieved: float
    client_cpu: float  # this process's CPU seconds per wall second (of the level)
    server_cpu_ms: float  # server CPU per completed request


def row_of(document_id: str, chunk_index: int) -> int:
    return int(document_id.removeprefix("doc-")) * 10 + chunk_index


# --- processes: memory and CPU from /proc ----------------------------------------------------

def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def memory_mib(pids: Sequence[int]) -> tuple[float, float]:
    """(sum of RSS, sum of PSS) in MiB."""
    rss = pss = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name == "Rss":
                    rss += int(value.split()[0])
                elif name == "Pss":
                    pss += int(value.split()[0])
    return rss / 1024, pss / 1024


def cpu_seconds(pids: Sequence[int]) -> float:
    ticks = 0
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- Chroma as a server ----------------------------------------------------------------------

@contextlib.contextmanager
def chroma_server(path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = (path.parent / "chroma.log").open("wb")
    proc = subprocess.Popen(["chroma", "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chroma run did not start; see {log.name}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def chroma_load(client: Any, texts: Sequence[str], vectors: np.ndarray, row: Callable[[str], None]) -> Any:
    collection = await client.create_collection(
        COLLECTION, embedding_function=None,
        configuration={"hnsw": {"space": "cosine", "max_neighbors": HNSW_M,
                                "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": EF_SEARCH}})
    batch = int(await client.get_max_batch_size())
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        end = min(len(texts), i + batch)
        await collection.add(ids=[str(j) for j in range(i, end)], embeddings=vectors[i:end],
                             documents=list(texts[i:end]))
        if (i // batch) % 5 == 4:
            row(f"  chroma: added {end} ({time.perf_counter() - started:.0f} s)")
    row(f"  chroma: {len(texts)} chunks added in batches of {batch}: {time.perf_counter() - started:.1f} s")
    return collection


# --- the open loop ---------------------------------------------------------------------------

async def open_loop(call: Call, n_queries: int, qps: float, seconds: float, drain: float,
                    server_pids: Callable[[], list[int]]) -> tuple[list[float], int, float, float, float]:
    """(latencies ms with inf for unfinished/failed, failed, achieved QPS, client CPU share,
    server CPU ms per completed request)."""
    loop = asyncio.get_running_loop()
    sends = max(1, int(qps * seconds))
    latencies = [math.inf] * sends
    finished: list[float] = []
    failed = 0

    async def one(i: int, due: float) -> None:
        nonlocal failed
        try:
            await call(i % n_queries)
        except Exception:
            failed += 1
            return
        now = loop.time()
        latencies[i] = (now - due) * 1000
        finished.append(now)

    pids = server_pids()
    cpu0, server0, wall0 = time.process_time(), cpu_seconds(pids), time.perf_counter()
    t0 = loop.time() + 0.05
    tasks = []
    for i in range(sends):
        due = t0 + i / qps
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > drain:
            break  # this client is too far behind its own schedule: the rest count as unanswered
        tasks.append(asyncio.ensure_future(one(i, due)))
    _, pending = await asyncio.wait(tasks, timeout=drain)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - wall0
    client = (time.process_time() - cpu0) / wall
    server = (cpu_seconds(pids) - server0) * 1000 / max(1, len(finished))
    achieved = len(finished) / (max(finished) - t0) if finished else 0.0
    return latencies, failed, achieved, client, server


def fmt_ms(value: float, finite: Sequence[float]) -> str:
    if math.isinf(value):
        return f">{max(finite):.0f}" if finite else "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


# --- the stores' calls -----------------------------------------------------------------------

class PgCalls:
    """The store port's calls, on a store made afresh for each level (`reopen`): a level that
    overloads the pool opens its breaker, and the next level must not start with it open."""

    def __init__(self, url: str, pool: int, wait_s: float, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.url, self.pool, self.wait_s, self.texts, self.vectors = url, pool, wait_s, texts, vectors
        self.store = self._new()

    def _new(self) -> PgKnowledgeStore:
        return PgKnowledgeStore(self.url, max_size=self.pool, ef_search=EF_SEARCH, connect_timeout_s=self.wait_s)

    async def reopen(self) -> None:
        """A new pool with all its connections made (two rounds of `pool` concurrent searches)."""
        await self.store.close()
        self.store = self._new()
        await self.store.open()
        for _ in range(2):
            await asyncio.gather(*(self.hybrid(i) for i in range(self.pool)))

    async def dense(self, i: int) -> list[int]:
        hits = await self.store.dense_search(WS, self.vectors[i], K)
        return [row_of(h.document_id, h.chunk_index) for h in hits]

    async def hybrid(self, i: int) -> list[int]:
        lists = await asyncio.gather(self.store.dense_search(WS, self.vectors[i], CANDIDATES),
                                     self.store.text_search(WS, self.texts[i], CANDIDATES))
        return [row_of(h.document_id, h.chunk_index) for h in fuse(lists, ["dense", "text"])[:K]]


def chroma_call(collection: Any, vectors: np.ndarray, in_flight: int) -> Call:
    """At most `in_flight` requests at once, as the pgvector pool allows connections: Chroma's
    client opens a connection per concurrent request without a bound, and with thousands
    queued its connection pool spends the client's CPU on itself (quadratic)."""
    gate = asyncio.Semaphore(in_flight)

    async def dense(i: int) -> list[int]:
        async with gate:
            result = await collection.query(query_embeddings=vectors[i:i + 1], n_results=K,
                                            include=["documents", "distances"])
        return [int(x) for x in result["ids"][0]]
    return dense


def exact_top(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the k nearest by cosine (vectors are unit length), best first."""
    out = np.zeros((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), 100):
        sims = queries[s:s + 100] @ corpus.T
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        out[s:s + 100] = np.take_along_axis(part, order, axis=1)
    return out


async def exact_hybrid(store: PgKnowledgeStore, texts: Sequence[str], corpus: np.ndarray, queries: np.ndarray,
                       exact20: np.ndarray) -> list[list[int]]:
    """The fusion hybrid would give with an exact dense leg: exact top 20 + the same text top 20."""
    out = []
    for i, top in enumerate(exact20):
        dense = [Hit(f"doc-{r // 10:06d}", int(r % 10), "", {}, {"dense": float(corpus[r] @ queries[i])}) for r in top]
        text = await store.text_search(WS, texts[i], CANDIDATES)
        out.append([row_of(h.document_id, h.chunk_index) for h in fuse([dense, text], ["dense", "text"])[:K]])
    return out


async def recall(call: Call, truth: Sequence[Sequence[int]]) -> float:
    found = 0
    for i, expected in enumerate(truth):
        found += len(set(await call(i)) & set(expected[:K]))
    return found / (K * len(truth))


# --- the run ---------------------------------------------------------------------------------

async def run(args: argparse.Namespace, url: str, pg_data: Path, tmp: Path) -> None:
    import chromadb  # benchmark only: pip install chromadb
    from chromadb.config import Settings as ChromaSettings

    row = print
    # An overloaded level opens the store's breaker; its lines would bury the progress.
    logging.getLogger("appliance.rag.store").setLevel(logging.ERROR)
    migrate(url, {"embedding_dim": DIM})
    texts = Text(seed=3).passages(args.chunks, 150)
    query_texts = [" ".join(t.split()[:32]) for t in Text(seed=13).passages(args.queries, 32)]
    inference = Inference(Settings())
    try:
        if args.real_vectors:
            row(f"embedding {args.chunks} chunk heads (cached in {args.cache}) ...")
            corpus = await real_vectors(inference, texts, Path(args.cache), row)
            started = time.perf_counter()
            queries = np.asarray(await inference.embedder.embed(query_texts), dtype=np.float32)
            row(f"  {len(queries)} queries embedded up front: {time.perf_counter() - started:.1f} s")
        else:
            corpus = synthetic_vectors(args.chunks, seed=2, spread=args.spread)
            queries = synthetic_vectors(args.queries, seed=99, spread=args.spread)
    finally:
        await inference.close()
    corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    exact20 = exact_top(corpus, queries, CANDIDATES)

    row(f"pgvector: loading {args.chunks} chunks ...")
    started = time.perf_counter()
    load_corpus(url, texts, corpus, row, token_vectors=False, hnsw=(HNSW_M, HNSW_EF_CONSTRUCTION))
    build = {"pgvector": time.perf_counter() - started}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE document_chunks")
        disk_row = conn.execute(
            "SELECT pg_total_relation_size('document_chunks'), pg_relation_size('document_chunks_embedding_hnsw')"
        ).fetchone()
    assert disk_row is not None
    disk = {"pgvector": (int(disk_row[0]), int(disk_row[1]))}
    pg_root = postmaster_pid(pg_data)

    pg = PgCalls(url, args.pool, args.drain, query_texts, queries)
    await pg.reopen()
    chroma_dir = tmp / "chroma"
    port = free_port()
    try:
        with chroma_server(chroma_dir, port) as proc:
            client = await chromadb.AsyncHttpClient(
                host="127.0.0.1", port=port, settings=ChromaSettings(chroma_http_max_connections=args.pool,
                                                                     anonymized_telemetry=False))
            row(f"chroma {chromadb.__version__} (server API {await client.get_version()}): loading ...")
            started = time.perf_counter()
            collection = await chroma_load(client, texts, corpus, row)
            build["chroma"] = time.perf_counter() - started
            await asyncio.sleep(5)  # let the server finish persisting what it was handed
            disk["chroma"] = (du(chroma_dir), 0)

            calls: dict[tuple[str, str], Call] = {("pgvector", "dense"): pg.dense,
                                                  ("pgvector", "hybrid"): pg.hybrid,
                                                  ("chroma", "dense"): chroma_call(collection, queries, args.pool)}
            servers: dict[str, Callable[[], list[int]]] = {"pgvector": lambda: descendants(pg_root),
                                                          "chroma": lambda: descendants(proc.pid)}

            dense_truth = [list(t[:K]) for t in exact20]
            hybrid_truth = await exact_hybrid(pg.store, query_texts, corpus, queries, exact20)
            recalls = {key: await recall(call, hybrid_truth if key[1] == "hybrid" else dense_truth)
                       for key, call in calls.items()}
            row("recall@10: " + ", ".join(f"{s} {m} {r:.3f}" for (s, m), r in recalls.items()))
            for name, pids in servers.items():
                rss, pss = memory_mib(pids())
                row(f"  {name} after load and recall: RSS {rss:.0f} MiB, PSS {pss:.0f} MiB,"
                    f" disk {disk[name][0] / 1e6:.0f} MB, build {build[name]:.0f} s")

            levels: list[Level] = []
            for qps in (float(x) for x in args.qps.split(",")):
                for (name, mode), call in calls.items():
                    if name == "pgvector":
                        await pg.reopen()
                    lat, failed, achieved, client_cpu, server_ms = await open_loop(
                        call, len(queries), qps, args.seconds, args.drain, servers[name])
                    levels.append(Level(name, mode, qps, len(lat), lat, failed, achieved, client_cpu, server_ms))
                    done = [x for x in lat if not math.isinf(x)]
                    row(f"  {name} {mode} @ {qps:g} QPS: {len(done)}/{len(lat)} answered, {achieved:.0f}/s,"
                        f" p50 {fmt_ms(pct(lat, 50), done)} ms, p95 {fmt_ms(pct(lat, 95), done)} ms,"
                        f" p99 {fmt_ms(pct(lat, 99), done)} ms, client CPU {client_cpu:.0%},"
                        f" server CPU {server_ms:.2f} ms/answer")
                    await asyncio.sleep(2)  # let the last level's stragglers clear
            memory = {name: memory_mib(pids()) for name, pids in servers.items()}
    finally:
        await pg.store.close()

    print()
    print("| store | mode | offered QPS | achieved QPS | answered | p50 ms | p95 ms | p99 ms | recall@10 |"
          " client CPU | server CPU ms/query |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for lv in levels:
        done = [x for x in lv.latencies_ms if not math.isinf(x)]
        p50, p95, p99 = (fmt_ms(pct(lv.latencies_ms, q), done) for q in (50, 95, 99))
        answered = f"{len(done)}/{lv.sent}" + (f" ({lv.failed} failed)" if lv.failed else "")
        print(f"| {lv.store} | {lv.mode} | {lv.offered:g} | {lv.achieved:.0f} | {answered} | {p50} | {p95} | {p99} |"
              f" {recalls[(lv.store, lv.mode)]:.3f} | {lv.client_cpu:.0%} | {lv.server_cpu_ms:.2f} |")
    print()
    print("| store | build s | disk MB | of which HNSW MB | RSS MiB (sum) | PSS MiB (sum) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("pgvector", "chroma"):
        total, hnsw = disk[name]
        rss, pss = memory[name]
        print(f"| {name} | {build[name]:.0f} | {total / 1e6:.0f} | {hnsw / 1e6:.0f} | {rss:.0f} | {pss:.0f} |"
              if hnsw else f"| {name} | {build[name]:.0f} | {total / 1e6:.0f} | | {rss:.0f} | {pss:.0f} |")
    kind = ("real MiniLM embeddings of chunk heads" if args.real_vectors
            else f"synthetic clustered vectors, spread {args.spread:g}")
    print(f"({args.chunks:,} chunks, {kind}; {len(queries)} held-out queries, embedded up front; {args.seconds:g} s"
          f" per level, drain {args.drain:g} s; pgvector pool {args.pool}; HNSW m/M {HNSW_M},"
          f" ef_construction {HNSW_EF_CONSTRUCTION}, ef_search {EF_SEARCH}; chromadb {chromadb.__version__})")


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The corpus and open-loop options every vector-store bench shares (bench_qdrant_edge too),
    so their tables compare like with like."""
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500, help="held-out queries (cycled through by the load)")
    parser.add_argument("--qps", default="10,100,1000", help="offered loads")
    parser.add_argument("--seconds", type=float, default=12.0, help="duration of each level")
    parser.add_argument("--drain", type=float, default=20.0, help="wait after a level's last send, at most")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_load_arguments(parser)
    parser.add_argument("--pool", type=int, default=KnowledgeSettings().db_pool_max,
                        help="pgvector connections (DB_POOL_MAX)")
    parser.add_argument("--real-vectors", action="store_true",
                        help="real MiniLM embeddings of each chunk's first 32 words (cached; ~4+ min per 100k)")
    parser.add_argument("--spread", type=float, default=1.0,
                        help="synthetic vectors' noise around their cluster centre (bench_knowledge's: 1.0;"
                             " larger is harder for HNSW)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "appliance-bench"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-vector-stores-") as tmp, \
            EmbeddedPostgres(Path(tmp) / "pg", delete_on_stop=True) as pg:
        asyncio.run(run(args, pg.url, Path(tmp) / "pg", Path(tmp)))


if __name__ == "__main__":
    main()
