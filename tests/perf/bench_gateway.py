"""Gateway relay benchmark: RPS, p50/p99 and latency added over direct, 1 and 32 connections.

    python -m tests.perf.bench_gateway [--seconds 8] [--litellm-bin PATH]

Upstream: nginx (Debian) serving a fixed completion and a fixed SSE stream when installed,
else a minimal asyncio server. Load: wrk when installed. The appliance runs with one worker
and access logging on (to a file). LiteLLM's proxy (one worker, same upstream) is measured
too when its executable is found (install it in its own venv: its pins differ from ours). Prints a table; the bar (issue 2): >= 2,500 RPS at 32 connections
non-streaming, <= 0.6 ms added p50 at 1 connection.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests import procs
from tests.perf.scratch import outside_tree, scratch_dir

COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "bench-model",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}}
MODELS = {"object": "list", "data": [{"id": "bench-model", "object": "model", "created": 0, "owned_by": "x"}]}


def sse_body(tokens: int = 16) -> bytes:
    out = []
    for i in range(tokens):
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "bench-model",
                 "choices": [{"index": 0, "delta": {"content": f" t{i}"}, "finish_reason": None}]}
        out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    final = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "bench-model",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": 9 + tokens}}
    out.append(b"data: " + json.dumps(final).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def start_nginx(work: Path, port: int) -> subprocess.Popen[bytes]:
    """nginx serving the fixed answers on `port`, its config and files under `work`."""
    work = outside_tree(work)
    (work / "www").mkdir()
    (work / "www" / "completion.json").write_text(json.dumps(COMPLETION))
    (work / "www" / "stream.sse").write_bytes(sse_body())
    (work / "www" / "models.json").write_text(json.dumps(MODELS))
    conf = f"""
worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/error.log crit;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work}; keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location /v1/models {{ default_type application/json; alias {work}/www/models.json; }}
    location /v1/chat/completions {{
      error_page 405 =200 $uri; default_type application/json; alias {work}/www/completion.json;
    }}
    location /stream/v1/chat/completions {{
      error_page 405 =200 $uri; default_type text/event-stream; alias {work}/www/stream.sse;
    }}
  }}
}}"""
    (work / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf")], stderr=subprocess.DEVNULL)
    procs.wait_port(port, proc)
    return proc


def start_python_upstream(port: int) -> subprocess.Popen[bytes]:
    return procs.spawn(["-m", "tests.fake_llm", "--port", str(port), "--models", "bench-model"], port)


def wrk(url: str, body: Mapping[str, object], conns: int, seconds: int, headers: dict[str, str]) -> dict[str, float]:
    hdrs = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
                     f'wrk.headers["Content-Type"] = "application/json"\n{hdrs}')
    out = subprocess.run(["wrk", "-t1" if conns == 1 else "-t2", f"-c{conns}", f"-d{seconds}s", "--latency",
                          "-s", script.name, url], capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), "errors": float(non2xx.group(1)) if non2xx else 0.0}


def with_children(pid: int) -> list[int]:
    """A process and its children (Granian's workers, the relay)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return pids


def rss_mb(pid: int) -> float:
    """RSS of a process and its children (Granian's worker), in MB."""
    total = 0
    for p in with_children(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its children. CPU per request
    reads the same on a busy machine, where RPS falls with whatever else runs."""
    ticks = 0
    for p in with_children(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def start_appliance(work: Path, name: str, up_port: int, *, stream_prefix: str = "", tree: Path = procs.ROOT,
                    extra_catalog: str = "", **env: str) -> tuple[subprocess.Popen[bytes], int]:
    """One `appliance serve` worker routing bench-* to the upstream (bench-stream to its SSE path),
    state under work/name, log in work/name.log; `tree` is the checkout whose code it runs;
    `extra_catalog` is appended to its catalog (`[[api_keys]]`, say)."""
    work = outside_tree(work)
    catalog = work / f"{name}.toml"
    catalog.write_text(f'[[backends]]\nname = "bench"\nkind = "vllm"\nbase_url = "http://127.0.0.1:{up_port}/v1"\n'
                       f'[[backends]]\nname = "bench-sse"\nkind = "vllm"\n'
                       f'base_url = "http://127.0.0.1:{up_port}/{stream_prefix}v1"\n'
                       '[[routes]]\npattern = "bench-stream"\nbackend = "bench-sse"\n'
                       '[[routes]]\npattern = "bench-*"\nbackend = "bench"\n' + extra_catalog)
    port = procs.free_port()
    proc = procs.spawn(["-m", "appliance", "serve", "--port", str(port), "--workers", "1", "--config", str(catalog)],
                       port, log=work / f"{name}.log", cwd=tree,
                       env=procs.child_env(APPLIANCE_STATE_DIR=str(work / name), PYTHONPATH=str(tree), **env))
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--litellm-bin", default=shutil.which("litellm"),
                        help="LiteLLM proxy executable (default: `litellm` on PATH); measured when present")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (e.g. a `git worktree` of an older commit) measured beside this one")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole matrix; the table shows medians")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    work = scratch_dir("bench-gw-")  # state and logs of this run
    up_port = procs.free_port()
    upstream = start_nginx(work, up_port) if shutil.which("nginx") else start_python_upstream(up_port)
    upstream_kind = "nginx" if shutil.which("nginx") else "python"
    gateway, gw_port = start_appliance(work, "gateway", up_port, stream_prefix="stream/" if upstream_kind == "nginx" else "")
    targets: list[tuple[str, str, subprocess.Popen[bytes] | None]] = [
        ("direct", f"http://127.0.0.1:{up_port}/v1/chat/completions", None),
        ("appliance", f"http://127.0.0.1:{gw_port}/v1/chat/completions", gateway),
    ]
    baseline = None
    if args.baseline is not None:
        baseline, base_port = start_appliance(work, "baseline", up_port, tree=args.baseline.resolve(),
                                              stream_prefix="stream/" if upstream_kind == "nginx" else "")
        targets.append(("baseline", f"http://127.0.0.1:{base_port}/v1/chat/completions", baseline))
    litellm = None
    if args.litellm_bin:
        lport = procs.free_port()
        (work / "litellm.yaml").write_text(
            f"model_list:\n  - model_name: bench-model\n    litellm_params:\n      model: openai/bench-model\n"
            f"      api_base: http://127.0.0.1:{up_port}/v1\n      api_key: x\n"
            f"  - model_name: bench-stream\n    litellm_params:\n      model: openai/bench-stream\n"
            f"      api_base: http://127.0.0.1:{up_port}/{'stream/' if upstream_kind == 'nginx' else ''}v1\n      api_key: x\n")
        litellm = subprocess.Popen([args.litellm_bin, "--config", str(work / "litellm.yaml"),
                                    "--port", str(lport), "--num_workers", "1"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   # loopback-only benchmark: no master key
                                   env={**os.environ, "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
                                        "LITELLM_LOG": "ERROR"})
        procs.wait_port(lport, litellm, timeout=120)
        time.sleep(3)
        targets.append(("litellm", f"http://127.0.0.1:{lport}/v1/chat/completions", litellm))
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello"}]}
    probe = subprocess.run(["curl", "-s", "-XPOST", f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                            "-d", json.dumps(dict(body, stream=True, model="bench-stream"))],
                           capture_output=True, text=True, check=False).stdout
    assert probe.count("data: ") == 18 and probe.endswith("data: [DONE]\n\n"), probe[:500]
    runs: list[tuple[Any, ...]] = []
    try:
        for _ in range(args.rounds):
            for mode in ("json", "stream"):
                for conns in (1, 32):
                    direct_p50 = None
                    for name, url, proc in targets:
                        b = dict(body, stream=True, model="bench-stream") if mode == "stream" else body
                        if mode == "stream" and name == "direct" and upstream_kind == "nginx":
                            url = url.replace("/v1/", "/stream/v1/")
                        wrk(url, b, conns, 2, {})  # warm-up
                        cpu_before = cpu_seconds(proc.pid) if proc else 0.0
                        r = wrk(url, b, conns, args.seconds, {})
                        served = r["rps"] * args.seconds
                        cpu_us = 1e6 * (cpu_seconds(proc.pid) - cpu_before) / served if proc and served else 0.0
                        if name == "direct":
                            direct_p50 = r["p50"]
                        added = r["p50"] - direct_p50 if direct_p50 is not None and name != "direct" else 0.0
                        runs.append((mode, conns, name, r["rps"], r["p50"], r["p99"], added, r["errors"],
                                     rss_mb(proc.pid) if proc else 0.0, cpu_us))
    finally:
        rows = medians(runs)
        procs.stop(gateway)
        if baseline is not None:
            procs.stop(baseline)
        upstream.terminate()
        if litellm:
            procs.stop(litellm)
        print_table(rows, upstream_kind, args.seconds)
    return 0


def medians(runs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One row per (mode, conns, target): the median of each figure over the rounds."""
    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for run in runs:
        groups.setdefault(run[:3], []).append(run[3:])
    return [(*key, *(statistics.median(col) for col in zip(*values, strict=True))) for key, values in groups.items()]


def print_table(rows: list[tuple[Any, ...]], upstream_kind: str, seconds: int) -> None:
    print(f"\nupstream: {upstream_kind}; appliance: 1 worker, access log on; {seconds}s per cell; "
          f"{os.cpu_count()} cores\n")
    print(f"{'mode':<7}{'conns':>6}  {'target':<10}{'RPS':>9}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'non-2xx':>9}{'RSS MB':>8}{'CPU us/req':>12}")
    for mode, conns, name, rps, p50, p99, added, errs, rss, cpu_us in rows:
        print(f"{mode:<7}{conns:>6}  {name:<10}{rps:>9.0f}{p50:>9.3f}{p99:>9.3f}{added:>11.3f}{errs:>9.0f}{rss:>8.0f}"
              f"{cpu_us:>12.0f}")


if __name__ == "__main__":
    raise SystemExit(main())
