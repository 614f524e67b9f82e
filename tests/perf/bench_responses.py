"""The Responses path against the chat path, in the same run: RPS at 32 connections and the p50
the translation adds at 1 connection, JSON and streamed.

    python -m tests.perf.bench_responses [--seconds 5] [--rounds 1] [--no-store]

Upstream: nginx serving a fixed completion and a fixed 16-token SSE stream (the Python fake
LLM when nginx is missing), as in bench_gateway. Load: wrk. One gateway (one worker, access
log on) serves `chat` (`/v1/chat/completions`) and `responses` (`/v1/responses`, `store:
false`: the translation alone); a second one, on an embedded PostgreSQL, serves
`responses+store` (the default `store: true`: one INSERT before the answer). `added p50` is a
target's p50 minus chat's in the same cell.

Before the load test, the translation alone, in process (best of several timings, so a busy
machine disturbs it less): microseconds per request for the chat body's check and for the
Responses body's parse + chat body + response object, and per streamed chunk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import timeit
from typing import Any

from appliance.openai.chat import validate_chat
from appliance.openai.responses import chat_body, parse_responses
from appliance.openai.responses_output import response_from_chat
from appliance.openai.responses_stream import ResponsesStream
from tests import procs
from tests.perf.bench_gateway import (
    COMPLETION,
    medians,
    start_appliance,
    start_nginx,
    start_python_upstream,
    wrk,
)
from tests.perf.scratch import scratch_dir

EMBEDDING_DIM = 384


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole matrix; the table shows medians")
    parser.add_argument("--no-store", action="store_true", help="skip the gateway on PostgreSQL")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    translation()
    work = scratch_dir("bench-responses-")
    up_port = procs.free_port()
    nginx = bool(shutil.which("nginx"))
    upstream = start_nginx(work, up_port) if nginx else start_python_upstream(up_port)
    prefix = "stream/" if nginx else ""
    started: list[subprocess.Popen[bytes]] = []
    pg = None
    try:
        gateway, port = start_appliance(work, "gateway", up_port, stream_prefix=prefix)
        started.append(gateway)
        targets = [("chat", f"http://127.0.0.1:{port}/v1/chat/completions", False),
                   ("responses", f"http://127.0.0.1:{port}/v1/responses", False)]
        if not args.no_store:
            from appliance.db.migrate import migrate
            from appliance.embedded.postgres import EmbeddedPostgres

            pg = EmbeddedPostgres(work / "pg", delete_on_stop=True)
            url = pg.start()
            migrate(url, {"embedding_dim": EMBEDDING_DIM})
            stored, stored_port = start_appliance(work, "stored", up_port, stream_prefix=prefix,
                                                  APPLIANCE_DATABASE_URL=url)
            started.append(stored)
            targets.append(("responses+store", f"http://127.0.0.1:{stored_port}/v1/responses", True))
        probe(port)
        runs: list[tuple[Any, ...]] = []
        for _ in range(args.rounds):
            for mode in ("json", "stream"):
                for conns in (1, 32):
                    chat_p50 = None
                    for name, url, store in targets:
                        body = request(name, mode, store)
                        wrk(url, body, conns, 2, {})  # warm-up
                        r = wrk(url, body, conns, args.seconds, {})
                        if name == "chat":
                            chat_p50 = r["p50"]
                        added = r["p50"] - chat_p50 if chat_p50 is not None and name != "chat" else 0.0
                        runs.append((mode, conns, name, r["rps"], r["p50"], r["p99"], added, r["errors"]))
    finally:
        for proc in started:
            procs.stop(proc)
        upstream.terminate()
        if pg is not None:
            pg.stop()
    print_table(medians(runs), "nginx" if nginx else "python", args.seconds)
    return 0


def best_us(fn: Any, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def translation() -> None:
    chat = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello"}]}
    body = {"model": "bench-model", "input": "Say hello", "store": False}

    def responses_json() -> None:
        call = parse_responses(body)
        chat_body(call)
        response_from_chat(call, COMPLETION, "resp_1", 0, None)

    chunk = {"choices": [{"index": 0, "delta": {"content": " t1"}, "finish_reason": None}]}
    stream = ResponsesStream(parse_responses(body), "resp_1", 0, None)
    stream.start()
    print("\ntranslation in process (best of 7)")
    print(f"  chat body check            {best_us(lambda: validate_chat(chat), 20000):8.2f} us/request")
    print(f"  responses parse+body+reply {best_us(responses_json, 5000):8.2f} us/request")
    print(f"  responses stream, a chunk  {best_us(lambda: stream.feed(chunk), 20000):8.2f} us/chunk")


def request(name: str, mode: str, store: bool) -> dict[str, Any]:
    model = "bench-stream" if mode == "stream" else "bench-model"
    if name == "chat":
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Say hello"}]}
    else:
        body = {"model": model, "input": "Say hello", "store": store}
    if mode == "stream":
        body["stream"] = True
    return body


def probe(port: int) -> None:
    """One streamed response, checked: created first, completed last, 16 text deltas."""
    out = subprocess.run(["curl", "-s", "-XPOST", f"http://127.0.0.1:{port}/v1/responses", "-d",
                          json.dumps(request("responses", "stream", False))],
                         capture_output=True, text=True, check=True).stdout
    kinds = [line.removeprefix("event: ") for line in out.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", out[-500:]
    assert kinds.count("response.output_text.delta") == 16, out[:500]


def print_table(rows: list[tuple[Any, ...]], upstream_kind: str, seconds: int) -> None:
    print(f"\nupstream: {upstream_kind}; gateways: 1 worker each, access log on; {seconds}s per cell\n")
    print(f"{'mode':<7}{'conns':>6}  {'target':<16}{'RPS':>8}{'vs chat':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'added p50':>11}{'non-2xx':>9}")
    chat_rps = {(m, c): rps for m, c, name, rps, *_ in rows if name == "chat"}
    for mode, conns, name, rps, p50, p99, added, errors in rows:
        ratio = rps / chat_rps[(mode, conns)] if chat_rps.get((mode, conns)) else 0.0
        print(f"{mode:<7}{conns:>6}  {name:<16}{rps:>8.0f}{ratio:>9.2f}{p50:>9.3f}{p99:>9.3f}{added:>11.3f}{errors:>9.0f}")


if __name__ == "__main__":
    raise SystemExit(main())
