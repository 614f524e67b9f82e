"""Ingest before and after, same pages, same run: chunks/s, CPU per chunk, bytes per chunk.

    python tests/perf/bench_ingest.py [--pages 40] [--max-chars 4000] [--base /tmp/kn-base] [--rounds 2]
                                      [--after-env APPLIANCE_KNOWLEDGE__EMBED_INT8=true ...]

"Before" is a copy of the committed code (`git archive HEAD | tar -x -C /tmp/kn-base`), run
from there; "after" is this tree. Each run is a child process with its own embedded
PostgreSQL, in-process model, the pages (tests/perf/knowledge_corpus.py) in groups of 64
as `appliance ingest` and one `POST /v1/knowledge/{ws}/documents` of 64 would send them:
`put_documents` when the tree has it, else `put_document` per page (what both did before).
Rounds alternate trees, so a busy hour slows both alike. CPU per chunk counts this child
and its PostgreSQL (the backends doing the writes), which a shared machine's load inflates
less than the wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()

WORKER = r'''
import asyncio, json, sys, tempfile, time
from pathlib import Path
import psutil
from appliance.config import Settings
from appliance.db.migrate import migrate
from appliance.embedded.postgres import EmbeddedPostgres
from appliance.inference.wiring import Inference
from appliance.rag.wiring import knowledge_service, knowledge_store

def cpu(procs):
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times(); total += t.user + t.system
        except psutil.Error:
            pass
    return total

def postgres(pg_root):
    """The postmaster of this data directory and its backends (their cmdlines omit the path)."""
    for p in psutil.process_iter(["cmdline"]):
        if pg_root in " ".join(p.info["cmdline"] or []):
            try:
                return [p, *p.children(recursive=True)]
            except psutil.Error:
                return [p]
    return []

async def main(url, pg_root, docs):
    migrate(url, {"embedding_dim": 384})
    s = Settings(database_url=url)
    inf = Inference(s); await inf.start()
    store = knowledge_store(s); await store.open()
    svc = knowledge_service(s, store, inf.embedder, None)
    await svc.put_document("warm", "w", "warm up " * 100)
    me = psutil.Process()
    ids = sorted(docs)
    c0, p0, t0 = cpu([me]), cpu(postgres(pg_root)), time.perf_counter()
    chunks = 0
    for i in range(0, len(ids), 64):
        group = [(d, docs[d], {}) for d in ids[i:i + 64]]
        if hasattr(svc, "put_documents"):
            chunks += sum(r.chunks for r in await svc.put_documents("bench", group))
        else:
            for d, text, meta in group:
                chunks += (await svc.put_document("bench", d, text, meta)).chunks
    wall = time.perf_counter() - t0
    own, pgc = cpu([me]) - c0, cpu(postgres(pg_root)) - p0
    sizes = {}
    async with store._conn() as conn:
        await conn.execute("VACUUM ANALYZE document_chunks")
        await conn.execute("VACUUM ANALYZE chunk_token_vectors")
        for t in ("document_chunks", "chunk_token_vectors"):
            row = await (await conn.execute("SELECT pg_total_relation_size(%s::regclass)", (t,))).fetchone()
            sizes[t] = int(row[0])
    await store.close(); await inf.close()
    print(json.dumps({"chunks": chunks, "wall": wall, "cpu": own, "pg_cpu": pgc, "sizes": sizes}))

docs = json.loads(Path(sys.argv[1]).read_text())
with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp, EmbeddedPostgres(Path(tmp) / "pg", delete_on_stop=True) as pg:
    asyncio.run(main(pg.url, str(Path(tmp) / "pg"), docs))
'''


def run_tree(tree: Path, docs_file: Path, extra_env: dict[str, str]) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(tree), APPLIANCE_SQL_DIR=str(tree / "sql"), **extra_env)
    proc = subprocess.run([sys.executable, "-c", WORKER, str(docs_file)], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--max-chars", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--base", default="/tmp/kn-base", help="a copy of the code to compare with")
    parser.add_argument("--corpus-cache", default=str(Path.home() / ".cache" / "appliance-bench" / "man"))
    parser.add_argument("--after-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for this tree's runs only (derived models go to a temporary cache)")
    args = parser.parse_args()
    after_env = dict(item.split("=", 1) for item in args.after_env)
    if after_env:
        after_env.setdefault("APPLIANCE_KNOWLEDGE__MODEL_CACHE_DIR", str(Path(tempfile.gettempdir()) / "bench-ingest-models"))
    sys.path.insert(0, str(HERE.parents[2]))
    from tests.perf.knowledge_corpus import corpus

    docs = corpus(Path(args.corpus_cache), max_chars=args.max_chars)
    keys = sorted(k for k in docs if "gcloud" not in k)
    picked = {k: docs[k] for k in keys[:: max(1, len(keys) // args.pages)][: args.pages]}
    trees = {"before (HEAD)": Path(args.base), "after (this tree)": HERE.parents[2]}
    results: dict[str, list[dict[str, object]]] = {name: [] for name in trees}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(picked, f)
        f.flush()
        for r in range(args.rounds):
            for name, tree in (list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]):
                res = run_tree(tree, Path(f.name), after_env if tree == HERE.parents[2] else {})
                results[name].append(res)
                print(f"round {r + 1} {name}: {res['chunks']} chunks, "
                      f"{float(res['chunks']) / float(res['wall']):.1f} chunks/s", flush=True)  # type: ignore[arg-type]
    print()
    print(f"| {len(picked)} man pages (cut at {args.max_chars} chars) | chunks | chunks/s (median) | CPU ms per chunk, "
          "process + PostgreSQL | bytes per chunk: chunks table + indexes | token vectors table |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        n = float(runs[0]["chunks"])  # type: ignore[arg-type]
        rate = statistics.median(n / float(x["wall"]) for x in runs)  # type: ignore[arg-type]
        cpu = statistics.median(1000 * (float(x["cpu"]) + float(x["pg_cpu"])) / n for x in runs)  # type: ignore[arg-type]
        pgc = statistics.median(1000 * float(x["pg_cpu"]) / n for x in runs)  # type: ignore[arg-type]
        sizes: dict[str, int] = runs[-1]["sizes"]  # type: ignore[assignment]
        print(f"| {name} | {int(n)} | {rate:.1f} | {cpu:.0f} (PostgreSQL {pgc:.0f}) | "
              f"{sizes['document_chunks'] / n:,.0f} | {sizes['chunk_token_vectors'] / n:,.0f} |")


if __name__ == "__main__":
    main()
