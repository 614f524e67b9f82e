"""Traces: a real gateway exporting OTLP/HTTP protobuf to a receiver in this test, decoded with
opentelemetry-proto. One server span per request; retrieval (embed, search, rerank) and the
upstream call as its children, with the GenAI attributes; the trace id on the request's log
lines beside its correlation id. (The router's `route` span: tests/unit/test_chat_tracing.py,
which spares this gateway the prompt encoder's start.)"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf in, spans kept as dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
                if ok:
                    request = ExportTraceServiceRequest.FromString(body)
                    for resource in request.resource_spans:
                        service = {a.key: _value(a.value) for a in resource.resource.attributes}
                        for scope in resource.scope_spans:
                            for s in scope.spans:
                                receiver.spans.append({
                                    "name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                                    "parent": s.parent_span_id.hex(), "kind": s.kind, "status": s.status.code,
                                    "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                                    "attributes": {a.key: _value(a.value) for a in s.attributes},
                                    "service": service.get("service.name")})
                    receiver.posts += 1
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id: str, names: set[str], timeout: float = 15.0) -> dict[str, dict[str, Any]]:
        """The spans of one trace by name, once all of `names` have arrived."""
        deadline = time.monotonic() + timeout
        found: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            found = {s["name"]: s for s in list(self.spans) if s["trace_id"] == trace_id}
            if names <= set(found):
                break
            time.sleep(0.1)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def traced(fake_llm: FakeLLM, migrated_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Receiver]]:
    receiver = Receiver()
    gw = start_gateway(tmp_path_factory.mktemp("traced"), catalog_for(fake_llm.port), timeout=60,
                       APPLIANCE_DATABASE_URL=migrated_pg,
                       OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
                       OTEL_BSP_SCHEDULE_DELAY="100", OTEL_SERVICE_NAME="gateway-under-test")
    try:
        yield gw, receiver
    finally:
        procs.stop(gw.proc)
        receiver.close()


def test_a_rag_stream_is_one_trace_with_its_steps_as_children(traced: tuple[Gateway, Receiver]) -> None:
    gw, receiver = traced
    with httpx.Client(base_url=gw.base_url, timeout=60) as http:
        put = http.post("/knowledge/traced/documents", json={
            "id": "mean.md", "text": "To fix a mean function, divide the sum by the length, then stop."})
        assert put.status_code in (200, 201), put.text
        with http.stream("POST", "/chat/completions", headers={"x-workspace": "traced"}, json={
                "model": "coder", "stream": True, "messages": [{"role": "user", "content": "How do I fix mean?"}]}) as resp:
            assert resp.status_code == 200
            body = resp.read().decode()
            cid = resp.headers["x-correlation-id"]
    assert "[DONE]" in body
    request_spans = [s for s in receiver.spans if s["attributes"].get("appliance.correlation_id") == cid]
    deadline = time.monotonic() + 15
    while not request_spans and time.monotonic() < deadline:
        time.sleep(0.1)
        request_spans = [s for s in receiver.spans if s["attributes"].get("appliance.correlation_id") == cid]
    [root] = request_spans
    spans = receiver.trace(root["trace_id"], {"retrieve", "search", "embed", "rerank", "chat coder"})
    assert root["name"] == "POST /v1/chat/completions" and root["parent"] == ""
    assert root["kind"] == 2 and root["service"] == "gateway-under-test"          # SERVER
    assert root["attributes"]["http.response.status_code"] == 200
    assert root["attributes"]["http.route"] == "/v1/chat/completions"
    parent = {name: s["parent"] for name, s in spans.items()}
    assert parent["retrieve"] == parent["chat coder"] == root["span_id"]
    assert parent["search"] == spans["retrieve"]["span_id"] == parent["rerank"]
    assert parent["embed"] == spans["search"]["span_id"]

    upstream = spans["chat coder"]
    assert upstream["kind"] == 3                                                 # CLIENT
    attrs = upstream["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "vllm"
    assert attrs["gen_ai.request.model"] == "coder" and attrs["gen_ai.response.model"] == "fake-model"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert 0 < attrs["gen_ai.server.time_to_first_token"] < 10 and attrs["appliance.ttft_ms"] > 0
    assert root["start"] <= upstream["start"] <= upstream["end"] <= root["end"]
    assert spans["embed"]["attributes"]["gen_ai.operation.name"] == "embeddings"

    # The trace id is on the request's log lines, beside its correlation id.
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [line for line in gw.log_lines() if line.get("correlation_id") == cid]
        if any(line.get("logger") == "access" for line in lines):
            break
        time.sleep(0.1)
    access = [line for line in lines if line.get("logger") == "access"]
    assert access and access[0]["trace_id"] == root["trace_id"]
    assert all(line["trace_id"] == root["trace_id"] for line in lines), lines


def test_a_traceparent_joins_the_clients_trace_and_a_failure_is_marked(traced: tuple[Gateway, Receiver]) -> None:
    gw, receiver = traced
    client_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    resp = httpx.post(f"{gw.base_url}/chat/completions", timeout=30,
                      headers={"traceparent": f"00-{client_trace}-00f067aa0ba902b7-01"},
                      json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 404
    spans = receiver.trace(client_trace, {"POST /v1/chat/completions"})
    root = spans["POST /v1/chat/completions"]
    assert root["parent"] == "00f067aa0ba902b7"
    assert root["attributes"]["http.response.status_code"] == 404


def test_tracing_off_loads_no_sdk_and_makes_no_span() -> None:
    code = ("import sys; from appliance.tracing.wiring import build_tracing; import appliance.services, appliance.app;"
            " t, f = build_tracing(); print(t.enabled, f, 'opentelemetry.sdk' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=procs.child_env(), capture_output=True, text=True,
                         timeout=60, cwd=procs.ROOT)
    assert out.stdout.split() == ["False", "None", "False"], out.stderr
