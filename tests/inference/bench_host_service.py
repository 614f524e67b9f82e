"""Memory and latency of `appliance serve` with the host's inference service vs models per worker.

    python -m tests.inference.bench_host_service [--workers 1 2] [--calls 200] [--rounds 5]
        [--conditions host local] [--skip memory latency hop]

`host`: the default, `serve` starts `appliance inference` on a unix socket and workers call it;
`local`: `APPLIANCE_INFERENCE__HOST_SERVICE=false`, every worker loads its own models (the
behaviour before); `default`: no setting at all (for a checkout that predates the setting).
Memory: each condition and worker count starts `serve` (with an embedded NATS, so the relay
runs too), waits until it is ready, reads RSS (VmRSS) and PSS (smaps_rollup) of every process in
its tree from /proc, makes `--calls` /v1/embeddings calls of one short input from 4 threads on
fresh connections (so every worker gets some), and reads them again. Latency: one-worker
gateways of each condition run side by side and `--rounds` rounds of `--calls` sequential calls
(keep-alive, client side) alternate between them. Hop: the unix-socket gRPC call alone
against the same model in process. Writes only under a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests import procs
from tests.perf.scratch import scratch_dir

BODY = json.dumps({"model": "any", "input": "hello world"}).encode()
HEADERS = {"Content-Type": "application/json"}


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return sorted(out)


def _kib(pid: int, path: str, field: str) -> int:
    for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _role(pid: int, main_cmd: bytes) -> str:
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    if cmd == main_cmd:
        return "worker"
    args = cmd.split(b"\0")
    for name in (b"relay", b"inference"):
        if name in args:
            return name.decode()
    return args[0].decode(errors="replace").rsplit("/", 1)[-1]


def snapshot(main: int) -> list[tuple[str, int, int, int]]:
    """(role, pid, RSS MiB*10, PSS MiB*10) for the serve process and its children."""
    main_cmd = Path(f"/proc/{main}/cmdline").read_bytes()
    rows = [("granian main", main, _kib(main, "status", "VmRSS"), _kib(main, "smaps_rollup", "Pss"))]
    for pid in _children(main):
        with contextlib.suppress(OSError):
            rows.append((_role(pid, main_cmd), pid, _kib(pid, "status", "VmRSS"), _kib(pid, "smaps_rollup", "Pss")))
    return rows


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def wait_ready(port: int, condition: str, timeout: float = 120.0) -> float:
    """Seconds until /readyz says the inference path the condition uses is there."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(OSError, ValueError):
            _, ready = _get(port, "/readyz")
            inf = ready.get("dependencies", {}).get("inference", {})
            if (condition == "host" and inf.get("grpc") == "SERVING") or \
               (condition != "host" and inf.get("local_loaded")):
                return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(f"{condition}: not ready in {timeout}s")


def one_call(conn: http.client.HTTPConnection) -> tuple[float, str]:
    start = time.perf_counter()
    conn.request("POST", "/v1/embeddings", body=BODY, headers=HEADERS)
    resp = conn.getresponse()
    resp.read()
    elapsed = (time.perf_counter() - start) * 1000
    assert resp.status == 200, resp.status
    return elapsed, resp.getheader("x-appliance-inference") or "?"


def spread_calls(port: int, calls: int) -> dict[str, int]:
    """`calls` calls on fresh connections from 4 threads, so every worker gets some."""
    def call(_: int) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            return one_call(conn)[1]
        finally:
            conn.close()
    paths: dict[str, int] = {}
    with ThreadPoolExecutor(4) as pool:
        for path in pool.map(call, range(calls)):
            paths[path] = paths.get(path, 0) + 1
    return paths


def timed_calls(port: int, calls: int) -> tuple[float, float, dict[str, int]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(20):
            one_call(conn)
        samples, paths = [], {}
        for _ in range(calls):
            ms, path = one_call(conn)
            samples.append(ms)
            paths[path] = paths.get(path, 0) + 1
    finally:
        conn.close()
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))], paths


def table(title: str, rows: list[tuple[str, int, int, int]]) -> None:
    print(f"  {title}")
    for role, pid, rss, pss in rows:
        print(f"    {role:<14}{pid:>8}  RSS {rss / 1024:7.1f} MiB  PSS {pss / 1024:7.1f} MiB")


def start(condition: str, workers: int, nats_url: str) -> tuple[Any, int]:
    work = scratch_dir(f"bench-host-{condition}-{workers}-")
    port = procs.free_port()
    env = {"APPLIANCE_STATE_DIR": str(work / "state"), "APPLIANCE_NATS_URL": nats_url,
           "APPLIANCE_LOG_LEVEL": "warning", "APPLIANCE_ACCESS_LOG": "false"}
    if condition == "local":
        env["APPLIANCE_INFERENCE__HOST_SERVICE"] = "false"
    proc = procs.spawn(["-m", "appliance", "serve", "--port", str(port), "--workers", str(workers)], port,
                       env=procs.child_env(**env), log=work / "serve.log", timeout=120)
    wait_ready(port, condition)
    return proc, port


def memory(condition: str, workers: int, calls: int, nats_url: str) -> None:
    proc, port = start(condition, workers, nats_url)
    try:
        time.sleep(2)  # let start-up allocations settle
        print(f"{condition}, {workers} worker(s)")
        table("idle", snapshot(proc.pid))
        paths = spread_calls(port, calls)
        time.sleep(1)
        table(f"after {calls} calls (served: {paths})", snapshot(proc.pid))
    finally:
        procs.stop(proc)


def latency(conditions: list[str], calls: int, rounds: int, nats_url: str) -> None:
    """One-worker gateways of each condition side by side, rounds alternating between them,
    so background load falls on all alike."""
    running = {c: start(c, 1, nats_url) for c in conditions}
    results: dict[str, list[tuple[float, float]]] = {c: [] for c in conditions}
    try:
        for _ in range(rounds):
            for condition, (_, port) in running.items():
                p50, p99, paths = timed_calls(port, calls)
                results[condition].append((p50, p99))
                print(f"  {condition:<8} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  (served: {paths})")
    finally:
        for proc, _ in running.values():
            procs.stop(proc)
    print(f"/v1/embeddings, one short input, {calls} calls per round, {rounds} rounds (median of rounds):")
    for condition, rows in results.items():
        print(f"  {condition:<8} p50 {statistics.median(r[0] for r in rows):6.2f} ms  "
              f"p99 {statistics.median(r[1] for r in rows):6.2f} ms")


async def _hop(calls: int, rounds: int) -> None:
    """The unix-socket hop alone: GrpcInference to a child service against the same model in
    this process, alternating rounds."""
    import subprocess
    import sys

    from appliance.config import KnowledgeSettings
    from appliance.inference.grpc_client import GrpcInference
    from appliance.inference.local import load_local_models

    work = scratch_dir("bench-host-hop-")
    env = procs.child_env(APPLIANCE_LOG_LEVEL="warning")
    child = subprocess.Popen([sys.executable, "-m", "appliance", "inference", "--listen", f"unix:{work}/g.sock",
                              "--health-listen", f"unix:{work}/h.sock"], env=env, cwd=procs.ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    models = load_local_models(KnowledgeSettings())
    remote = GrpcInference(f"unix:{work}/g.sock", deadline_s=30, max_message_bytes=1 << 24)
    try:
        assert await remote.wait_ready(120), "the service did not start"
        calls_by_path = {"grpc (unix)": lambda: remote.embed_array(["hello world"]),
                         "in process": lambda: models.embedder.embed(["hello world"])}
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in calls_by_path}
        for _ in range(rounds):
            for name, call in calls_by_path.items():
                for _ in range(20):
                    await call()
                samples = []
                for _ in range(calls):
                    start = time.perf_counter()
                    await call()
                    samples.append((time.perf_counter() - start) * 1000)
                samples.sort()
                results[name].append((statistics.median(samples), samples[int(len(samples) * 0.99)]))
        print(f"embed one short input, client side, {calls} calls x {rounds} rounds (median of rounds):")
        for name, rows in results.items():
            print(f"  {name:<12} p50 {statistics.median(r[0] for r in rows):6.2f} ms  "
                  f"p99 {statistics.median(r[1] for r in rows):6.2f} ms")
    finally:
        await remote.close()
        models.close()
        child.terminate()
        child.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--conditions", nargs="+", default=["host", "local"],
                        choices=["host", "local", "default"])
    parser.add_argument("--skip", nargs="+", default=[], choices=["memory", "latency", "hop"])
    args = parser.parse_args()
    from appliance.embedded.nats import EmbeddedNats

    nats = EmbeddedNats(scratch_dir("bench-host-nats-") / "nats")
    url = nats.start()
    try:
        if "memory" not in args.skip:
            for condition in args.conditions:
                for workers in args.workers:
                    memory(condition, workers, args.calls, url)
        if "latency" not in args.skip:
            latency(args.conditions, args.calls, args.rounds, url)
        if "hop" not in args.skip:
            asyncio.run(_hop(args.calls, args.rounds))
    finally:
        nats.stop()


if __name__ == "__main__":
    main()
