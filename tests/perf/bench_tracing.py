"""What tracing costs: the same gateway with tracing off and on, in alternating rounds, and the
spans' cost in microseconds in process.

    python -m tests.perf.bench_tracing [--seconds 5] [--rounds 3] [--baseline DIR]

Upstream: nginx (Debian) serving a fixed completion and SSE stream, else the fake LLM. Load:
wrk, 32 connections, non-streaming and streaming. Each gateway has one worker and its access
log on (to a file). "off" has no OTLP endpoint (no SDK loaded, no span made); "on" exports every
request's spans (server span, upstream `chat` span) over OTLP/HTTP to a sink in this process
that counts and drops them. `--baseline DIR` (a checkout of an older commit) runs beside them,
tracing off, to show what the always-on parts (GenAI histograms) cost. Rounds alternate the
order. Prints RPS medians and ratios to "off", then the in-process cost of the port's calls
(the no-op, and the SDK with its batch processor and an exporter that drops).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests import procs
from tests.perf.bench_gateway import start_appliance, start_nginx, start_python_upstream, wrk
from tests.perf.scratch import scratch_dir


class Sink:
    """Accepts OTLP/HTTP posts and counts their bytes; decodes nothing."""

    def __init__(self) -> None:
        self.posts = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                n = int(self.headers["Content-Length"] or 0)
                self.rfile.read(n)
                sink.posts += 1
                sink.bytes += n
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def micro(n: int = 20_000) -> list[tuple[str, float]]:
    """µs per call of what a traced request does, off and on (SDK, batch processor, dropping exporter)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from appliance.domain.tracing import NO_TRACER
    from appliance.tracing.otel import OtelTracer

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=n * 4))
    on = OtelTracer(provider)
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 9}

    def per_call(fn: Any) -> float:
        """CPU µs per call (this process, the SDK's export thread included): steadier than
        wall-clock on a shared machine."""
        fn()
        t = time.process_time()
        for _ in range(n):
            fn()
        provider.force_flush()
        return (time.process_time() - t) / n * 1e6

    def request_off() -> None:  # what the middleware and the domain do with tracing off
        if NO_TRACER.enabled:
            raise AssertionError
        with NO_TRACER.span("route", attrs):
            pass

    def request_on() -> None:   # a request span, current, with the upstream span under it
        root = on.start_request("POST /v1/chat/completions", {"url.path": "/v1/chat/completions"})
        child = on.start("chat m", attrs, start_time=time.time(), client=True)
        child.end()
        root.set("http.response.status_code", 200)
        root.end()

    rows = [("off: enabled test + a no-op span() block", per_call(request_off)),
            ("on: request span + upstream span (SDK, batched)", per_call(request_on))]
    raw = provider.get_tracer("bench")

    def sdk_only() -> None:
        raw.start_span("s").end()

    rows.append(("the SDK alone: one span started and ended", per_call(sdk_only)))
    provider.shutdown()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout, measured with tracing off")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    work = scratch_dir("bench-tracing-")
    up_port = procs.free_port()
    nginx = shutil.which("nginx") is not None
    upstream = start_nginx(work, up_port) if nginx else start_python_upstream(up_port)
    prefix = "stream/" if nginx else ""
    sink = Sink()
    gateways = {
        "off": start_appliance(work, "off", up_port, stream_prefix=prefix),
        "on": start_appliance(work, "on", up_port, stream_prefix=prefix,
                              OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink.port}",
                              OTEL_BSP_SCHEDULE_DELAY="500"),
    }
    if args.baseline is not None:
        gateways["baseline"] = start_appliance(work, "baseline", up_port, stream_prefix=prefix,
                                               tree=args.baseline.resolve())
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello"}]}
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for _, port in gateways.values():  # warm-up
            wrk(f"http://127.0.0.1:{port}/v1/chat/completions", body, 32, 2, {})
        for rnd in range(args.rounds):
            order = list(gateways) if rnd % 2 == 0 else list(reversed(gateways))
            for mode in ("json", "stream"):
                b = dict(body, stream=True, model="bench-stream") if mode == "stream" else body
                for name in order:
                    r = wrk(f"http://127.0.0.1:{gateways[name][1]}/v1/chat/completions", b, 32, args.seconds, {})
                    results.setdefault((mode, name), []).append(r["rps"])
                    assert r["errors"] == 0, (name, mode, r)
    finally:
        for proc, _ in gateways.values():
            procs.stop(proc)
        upstream.terminate()
    print(f"\n32 connections, 1 worker, access log on; {args.seconds}s x {args.rounds} rounds; "
          f"upstream {'nginx' if nginx else 'python'}; spans received by the sink: {sink.posts} posts, "
          f"{sink.bytes / 1e6:.1f} MB\n")
    print(f"{'mode':<7}{'gateway':<10}{'RPS median':>11}{'vs off':>9}   rounds")
    for mode in ("json", "stream"):
        off = statistics.median(results[(mode, "off")])
        for name in gateways:
            rps = results[(mode, name)]
            med = statistics.median(rps)
            print(f"{mode:<7}{name:<10}{med:>11.0f}{med / off:>9.3f}   {', '.join(f'{x:.0f}' for x in rps)}")
    print(f"\n{'in process (CPU µs per call)':<52}{'µs':>8}")
    for label, us in micro():
        print(f"{label:<52}{us:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
