"""ChatService through the tracing port, without sockets: the router's decision and the upstream
call as children of the request's span (the SDK with an in-memory exporter), the GenAI
attributes, and the GPU-seconds a local backend's answer is recorded with (and their cost at its
price per GPU-hour)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from appliance.api.errors import status_of
from appliance.domain.chat import ChatService
from appliance.domain.chat_request import ChatRequest
from appliance.domain.errors import BackendTimeout
from appliance.domain.models import ModelDirectory
from appliance.domain.ports import Capabilities
from appliance.domain.routing import ModelEntry, ModelRouter
from appliance.domain.semantic_router import SemanticRouter
from appliance.domain.tracing import NO_TRACER
from appliance.tracing.otel import OtelTracer
from tests.unit.chat_fakes import Codec, FakeBackend, Outcomes
from tests.unit.test_semantic_router import CARDS, FakeEncoder

LOCAL = Capabilities(local=True, provider="vllm")


async def traced(backend: FakeBackend, *, tracing: bool = True) -> tuple[ChatService, Outcomes, InMemorySpanExporter,
                                                                        OtelTracer]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelTracer(provider)
    models = ModelRouter([ModelEntry(c.id, (backend.name,), "upstream-" + c.id, "x") for c in CARDS], [])
    router = SemanticRouter("auto", CARDS, "general", FakeEncoder(), budget_ms=1000)
    await router.prepare()
    outcomes = Outcomes()
    chat = ChatService(models, {backend.name: backend}, ModelDirectory(models, {backend.name: backend}, ttl_s=60),
                       Codec(), status_of=status_of, recorder=outcomes, routers={"auto": router},
                       tracer=tracer if tracing else NO_TRACER)
    return chat, outcomes, exporter, tracer


def ask(text: str) -> ChatRequest:
    return ChatRequest({"model": "auto", "messages": [{"role": "user", "content": text}]}, "auto", False, "cid-1")


async def test_the_route_and_the_upstream_call_are_children_of_the_request_span() -> None:
    backend = FakeBackend("gpu-box", capabilities=LOCAL, delay=0.02)
    chat, outcomes, exporter, tracer = await traced(backend)
    root = tracer.start_request("POST /v1/chat/completions", {"appliance.correlation_id": "cid-1"})
    req = ask("fix this code")
    await chat.complete(req, await chat.plan(req))
    root.end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"POST /v1/chat/completions", "route", "chat auto"}
    request_id = spans["POST /v1/chat/completions"].context.span_id
    assert spans["route"].parent.span_id == request_id and spans["chat auto"].parent.span_id == request_id
    assert {s.context.trace_id for s in spans.values()} == {int(root.trace_id, 16)}
    assert spans["route"].attributes["appliance.route.selected"] == "coder"
    upstream = spans["chat auto"]
    assert dict(upstream.attributes).items() >= {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "vllm", "gen_ai.request.model": "auto",
        "gen_ai.response.model": "upstream-coder", "gen_ai.usage.input_tokens": 1, "gen_ai.usage.output_tokens": 1,
        "appliance.backend": "gpu-box", "appliance.status": 200}.items()
    assert (upstream.end_time - upstream.start_time) / 1e9 == pytest.approx(0.02, abs=0.015)
    [outcome] = outcomes.chats
    assert 0.015 < outcome.gpu_seconds < 0.5        # the local backend's time on it


async def test_a_failed_upstream_call_is_an_error_span_and_a_cloud_backend_has_no_gpu_seconds() -> None:
    backend = FakeBackend("cloud", fail=[BackendTimeout("slow", backend="cloud")])
    chat, outcomes, exporter, tracer = await traced(backend)
    root = tracer.start_request("POST /v1/chat/completions", {})
    req = ask("chat with me")
    with pytest.raises(BackendTimeout):
        await chat.complete(req, await chat.plan(req))
    root.end()
    upstream = next(s for s in exporter.get_finished_spans() if s.name == "chat auto")
    assert upstream.status.status_code.name == "ERROR" and upstream.attributes["error.type"] == "504"
    assert outcomes.chats[0].gpu_seconds == 0.0


async def test_tracing_off_records_the_same_and_makes_no_span() -> None:
    backend = FakeBackend("gpu-box", capabilities=Capabilities(local=True, provider="vllm", gpu_hour_usd=36.0))
    chat, outcomes, exporter, _ = await traced(backend, tracing=False)
    req = ask("fix this code")
    await chat.complete(req, await chat.plan(req))
    assert exporter.get_finished_spans() == () and len(outcomes.chats) == 1
    [outcome] = outcomes.chats
    assert outcome.gpu_seconds > 0      # an unpriced model on a backend priced per GPU-hour: its time's cost
    assert outcome.cost_usd == pytest.approx(outcome.gpu_seconds * 36.0 / 3600)
