"""Knowledge quality and ingest on a real corpus: this machine's man pages (tests/perf/knowledge_corpus.py).

    python tests/perf/bench_knowledge_quality.py [--max-chars 4000] [--queries 600] [--corpus-cache DIR]

1. Ingest every page through `KnowledgeService.put_documents` (the path of `appliance ingest`
   and `POST /v1/knowledge/{ws}/documents`: in-process model, embedded PostgreSQL): chunks/s,
   CPU seconds per chunk (this process and PostgreSQL's), bytes per chunk on disk (table,
   TOAST and indexes) for the chunks and for the token vectors.
2. Retrieval quality over documents (a chunk hit names its page; repeats collapse), for
   queries taken from each page's NAME line: R@1, R@5, MRR@10 for text, dense, hybrid and
   hybrid + rerank, and BM25 over whole pages (k1 1.2, b 0.75, the same run) as the baseline.
3. Rerank variants over the same fused top 20, scored from the int8 token vectors stored at
   ingest, re-encoded the way each storage format would keep them: their MRR@10 and bytes per
   chunk, so a smaller format is judged against today's on the same candidates. The stored
   rows are int8 (format 1) when run against a tree before migration 0004; against a later
   tree they are format 2 already, and the int8 row of the table is then format 2 itself.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import psutil

from appliance.config import KnowledgeSettings, Settings
from appliance.db import token_codec
from appliance.db.migrate import migrate
from appliance.embedded.postgres import EmbeddedPostgres
from appliance.inference.wiring import Inference
from appliance.rag.late_interaction import unpack
from appliance.rag.wiring import knowledge_service, knowledge_store
from tests.perf.knowledge_corpus import Query, corpus, queries

WS = "man"
DIM = 384
_WORD = re.compile(r"[a-z0-9]+")


class BM25:
    def __init__(self, docs: dict[str, str], k1: float = 1.2, b: float = 0.75) -> None:
        self.ids = list(docs)
        self.tf = [Counter(_WORD.findall(docs[i].lower())) for i in self.ids]
        self.len = np.array([sum(t.values()) for t in self.tf], dtype=np.float64)
        self.avg = float(self.len.mean())
        df: Counter[str] = Counter()
        for t in self.tf:
            df.update(t.keys())
        n = len(self.ids)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}
        self.post: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, t in enumerate(self.tf):
            for w, c in t.items():
                self.post[w].append((i, c))
        self.k1, self.b = k1, b

    def search(self, query: str, k: int = 10) -> list[str]:
        scores: dict[int, float] = defaultdict(float)
        for w in set(_WORD.findall(query.lower())):
            idf = self.idf.get(w)
            if idf is None:
                continue
            for i, c in self.post[w]:
                norm = self.k1 * (1 - self.b + self.b * self.len[i] / self.avg)
                scores[i] += idf * c * (self.k1 + 1) / (c + norm)
        return [self.ids[i] for i, _ in sorted(scores.items(), key=lambda x: -x[1])[:k]]


def metrics(ranked: Sequence[Sequence[str]], qs: Sequence[Query]) -> tuple[float, float, float]:
    r1 = r5 = mrr = 0.0
    for docs, q in zip(ranked, qs, strict=True):
        ranks = [i for i, d in enumerate(docs[:10], start=1) if d in q.relevant]
        first = ranks[0] if ranks else None
        r1 += first == 1
        r5 += first is not None and first <= 5
        mrr += 1 / first if first else 0.0
    n = len(qs)
    return r1 / n, r5 / n, mrr / n


def documents(hits: Sequence[object]) -> list[str]:
    out: list[str] = []
    for h in hits:
        d = h.document_id  # type: ignore[attr-defined]
        if d not in out:
            out.append(d)
    return out


# --- token-vector storage formats, from the stored int8 rows --------------------------------
# Each returns (doc token matrix as scored, bytes it would take). Scores are MaxSim of the
# query's float token vectors against that matrix.

def v_int8(tok: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, int]:
    return tok, tok.shape[0] * DIM


def _dedupe(tok: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
    if ids is None or len(ids) != len(tok):
        return tok
    groups: dict[int, list[int]] = defaultdict(list)
    for row, i in enumerate(ids.tolist()):
        groups[i].append(row)
    merged = np.stack([tok[rows].mean(axis=0) for rows in groups.values()])
    return merged / np.maximum(np.linalg.norm(merged, axis=1, keepdims=True), 1e-6)


def v_sign(tok: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, int]:
    return np.sign(tok) / math.sqrt(DIM), tok.shape[0] * DIM // 8


def v_sign_dedupe(tok: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, int]:
    t = _dedupe(tok, ids)
    return np.sign(t) / math.sqrt(DIM), t.shape[0] * DIM // 8


def _centred(t: np.ndarray) -> np.ndarray:
    c = t.mean(axis=0, keepdims=True).astype(np.float16).astype(np.float32)
    r = t - c
    alpha = (np.abs(r).mean(axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
    out: np.ndarray = c + alpha * np.sign(r)
    return out


def v_centred(tok: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, int]:
    return _centred(tok), DIM * 2 + tok.shape[0] * (DIM // 8 + 2)


def v_centred_dedupe(tok: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, int]:
    t = _dedupe(tok, ids)
    return _centred(t), DIM * 2 + t.shape[0] * (DIM // 8 + 2)


def v_product(cosine: float) -> Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, int]]:
    def fn(tok: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, int]:
        data = token_codec.compact_with(tok, cosine)
        return token_codec.expand_compact(data), len(data)
    return fn


VARIANTS: dict[str, Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, int]]] = {
    "int8, all tokens (today)": v_int8,
    "1-bit sign, all tokens": v_sign,
    "1-bit sign, one per token id": v_sign_dedupe,
    "chunk centre fp16 + 1-bit residual + scale, all tokens": v_centred,
    "chunk centre fp16 + 1-bit residual + scale, one per token id": v_centred_dedupe,
    "format 2 (token_codec): merge at cosine 0.9, 8 kB cap": v_product(0.9),
    "format 2, merge at cosine 0.8": v_product(0.8),
    "format 2, merge at cosine 0.95": v_product(0.95),
    "format 2, no merge (8 kB cap only)": v_product(1.01),
}


def raw_maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float((q @ d.T).max(axis=1).mean()) if len(q) and len(d) else 0.0


def pg_cpu(pid: int) -> float:
    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


async def run(args: argparse.Namespace, url: str, pg_pid: int | None) -> None:
    migrate(url, {"embedding_dim": DIM})
    docs = corpus(Path(args.corpus_cache), max_chars=args.max_chars, limit=args.pages)
    qs_all = queries(docs)
    qs = qs_all[:: max(1, len(qs_all) // args.queries)][: args.queries]
    total_chars = sum(map(len, docs.values()))
    print(f"corpus: {len(docs)} man pages, {total_chars / 1e6:.1f} MB, {len(qs)} queries "
          f"({sum(len(q.relevant) > 1 for q in qs)} with several equally relevant pages)")
    settings = Settings(database_url=url, knowledge=KnowledgeSettings())
    inference = Inference(settings)
    await inference.start()
    store = knowledge_store(settings)
    service = knowledge_service(settings, store, inference.embedder, inference.reranker)
    await store.open()
    try:
        await service.put_document("warmup", "w", "warm up " * 100)
        ids = sorted(docs)
        me = psutil.Process()
        cpu0, pg0 = me.cpu_times(), pg_cpu(pg_pid) if pg_pid else 0.0
        started = time.perf_counter()
        chunks = 0
        for i in range(0, len(ids), 64):
            res = await service.put_documents(WS, [(d, docs[d], {}) for d in ids[i:i + 64]])
            chunks += sum(r.chunks for r in res)
            if (i // 64) % 5 == 4:
                el = time.perf_counter() - started
                print(f"  ingested {i + 64} pages, {chunks} chunks, {chunks / el:.1f} chunks/s")
        wall = time.perf_counter() - started
        cpu1 = me.cpu_times()
        own = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        pgc = (pg_cpu(pg_pid) - pg0) if pg_pid else float("nan")
        sizes = await sizes_of(store)
        print(f"ingest: {chunks} chunks in {wall:.0f} s = {chunks / wall:.1f} chunks/s; CPU per chunk "
              f"{1000 * own / chunks:.0f} ms (this process) + {1000 * pgc / chunks:.0f} ms (PostgreSQL)")
        for name, size in sizes.items():
            print(f"  {name}: {size / 1e6:.1f} MB, {size / chunks:,.0f} bytes per chunk")

        # 2. quality
        bm = BM25(docs)
        ranked: dict[str, list[list[str]]] = {"BM25, whole pages": [bm.search(q.text) for q in qs]}
        lat: dict[str, list[float]] = defaultdict(list)
        heads: list[list[object]] = []
        for q in qs:
            for mode in ("text", "dense", "hybrid"):
                t = time.perf_counter()
                hits = await service.search(WS, q.text, top_k=20 if mode == "hybrid" else 10, mode=mode)
                lat[mode].append((time.perf_counter() - t) * 1000)
                ranked.setdefault(mode, []).append(documents(hits[:10]))
                if mode == "hybrid":
                    heads.append(hits)
            t = time.perf_counter()
            hits = await service.search(WS, q.text, top_k=10, mode="hybrid", rerank=True)
            lat["hybrid + rerank"].append((time.perf_counter() - t) * 1000)
            ranked.setdefault("hybrid + rerank (MaxSim, stored token vectors)", []).append(documents(hits))

        # 3. variants over the same candidates
        tokenizer = inference.embedder.tokenizer
        late = service._late
        assert late is not None
        var_rank: dict[str, list[list[str]]] = defaultdict(list)
        var_bytes: dict[str, list[int]] = defaultdict(list)
        int8_rows = await _int8_rows(store)
        for q, head in zip(qs if int8_rows else [], heads, strict=False):
            qtok = await late.prepare(q.text)
            stored = await store.token_vectors(WS, [(h.document_id, h.chunk_index) for h in head])  # type: ignore[attr-defined]
            for name, fn in VARIANTS.items():
                scored = []
                for h in head:
                    data = stored.get((h.document_id, h.chunk_index))  # type: ignore[attr-defined]
                    if data is None:
                        scored.append((0.0, h))
                        continue
                    tok = unpack(data, DIM)
                    tid = np.array(tokenizer.encode(h.content, add_special_tokens=False).ids)  # type: ignore[attr-defined]
                    mat, nbytes = fn(tok, tid)
                    var_bytes[name].append(nbytes)
                    scored.append((raw_maxsim(qtok, mat), h))
                scored.sort(key=lambda x: -x[0])
                var_rank[name].append(documents([h for _, h in scored][:10]))
    finally:
        await store.close()
        await inference.close()

    print()
    print(f"| mode ({len(qs)} queries, {len(docs)} pages) | R@1 | R@5 | MRR@10 | p50 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, r in ranked.items():
        r1, r5, mrr = metrics(r, qs)
        key = next((k for k in lat if name.startswith(k)), "")
        p50 = f"{statistics.median(lat[key]):.1f}" if key and not name.startswith("BM25") else ""
        if name.startswith("hybrid + rerank"):
            p50 = f"{statistics.median(lat['hybrid + rerank']):.1f}"
        elif name == "hybrid":
            p50 = f"{statistics.median(lat['hybrid']):.1f} (top 20)"
        print(f"| {name} | {r1:.3f} | {r5:.3f} | {mrr:.3f} | {p50} |")
    print()
    if not var_rank:
        print("(token-vector variants: the rows are format 2; run from a tree before migration 0004 for them)")
        return
    print("| token-vector format (rerank of the same fused top 20) | MRR@10 | bytes per candidate chunk (mean) |")
    print("|---|---:|---:|")
    for name in VARIANTS:
        _, _, mrr = metrics(var_rank[name], qs)
        print(f"| {name} | {mrr:.3f} | {statistics.mean(var_bytes[name]):,.0f} |")


async def _int8_rows(store: object) -> bool:
    """Whether the stored token vectors are int8 (a tree before 0004 wrote them)."""
    async with store._conn() as conn:  # type: ignore[attr-defined]
        row = await (await conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'chunk_token_vectors'"
            " AND column_name = 'format'")).fetchone()
        if row and row[0]:
            row = await (await conn.execute("SELECT count(*) FROM chunk_token_vectors WHERE format = 2")).fetchone()
            return bool(row) and row[0] == 0
    return True


async def sizes_of(store: object) -> dict[str, int]:
    out = {}
    async with store._conn() as conn:  # type: ignore[attr-defined]
        await conn.execute("VACUUM ANALYZE document_chunks")
        await conn.execute("VACUUM ANALYZE chunk_token_vectors")
        for table in ("document_chunks", "chunk_token_vectors"):
            row = await (await conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,))).fetchone()
            out[f"{table} (table + TOAST + indexes)"] = int(row[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--max-chars", type=int, default=4000, help="each page cut at this many characters")
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--pages", type=int, default=0, help="a sample of the pages (0: all ~2,100)")
    parser.add_argument("--corpus-cache", default=str(Path.home() / ".cache" / "appliance-bench" / "man"))
    parser.add_argument("--database-url")
    args = parser.parse_args()
    if args.database_url:
        asyncio.run(run(args, args.database_url, None))
        return
    with tempfile.TemporaryDirectory(prefix="bench-kq-") as tmp, \
            EmbeddedPostgres(Path(tmp) / "pg", delete_on_stop=True) as pg:
        pid = _postmaster_pid(Path(tmp) / "pg")
        asyncio.run(run(args, pg.url, pid))


def _postmaster_pid(data: Path) -> int | None:
    for f in data.rglob("postmaster.pid"):
        return int(f.read_text().split()[0])
    return None


if __name__ == "__main__":
    main()
