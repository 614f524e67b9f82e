"""Outcomes as events: which subjects a request emits, with which payload and de-duplication id.

Subjects (ARCHITECTURE.md): `pipeline.knowledge.{chat.persist, tool_call, retrieve, compose,
flow.lineage, embedding}` and `telemetry.knowledge.{chat, tool_call, retrieve, embedding}`.
Every payload carries `schema_version`, `event_id`, `correlation_id` and `ts` (unix seconds).
`event_id` is also the `Nats-Msg-Id`: correlation id, request start (microseconds), subject
and an index where one request emits several of a subject, so a re-publish is de-duplicated
by JetStream and a redelivery is a no-op for the persister.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any, Final

from appliance.domain.ports import Event
from appliance.domain.records import ChatOutcome, EmbeddingOutcome, RetrievalOutcome

SCHEMA_VERSION: Final = 1
PIPELINE: Final = "pipeline.knowledge"
TELEMETRY: Final = "telemetry.knowledge"


def event_id(correlation_id: str, started_at: float, subject: str, index: int = 0) -> str:
    return f"{correlation_id}:{int(started_at * 1_000_000)}:{subject}:{index}"


def _event(subject: str, cid: str, started_at: float, body: Mapping[str, Any], index: int = 0) -> Event:
    eid = event_id(cid, started_at, subject, index)
    payload = {"schema_version": SCHEMA_VERSION, "event_id": eid, "correlation_id": cid, "ts": started_at, **body}
    return Event(subject, payload, eid)


def chat_events(o: ChatOutcome) -> Iterator[Event]:
    cid, t = o.correlation_id, o.started_at
    usage = {"prompt_tokens": o.usage.prompt_tokens, "completion_tokens": o.usage.completion_tokens}
    if o.status == 200:
        yield _event(f"{PIPELINE}.chat.persist", cid, t, {
            "model": o.model, "upstream_model": o.upstream_model, "backend": o.backend, "route": o.route,
            "streaming": o.streaming, "messages": list(o.messages), "response_text": o.response_text,
            "finish_reason": o.finish_reason, "usage": usage, "workspace": o.workspace, "sources": list(o.sources),
            "tool_calls": [asdict(c) for c in o.tool_calls]})
    for i, call in enumerate(o.tool_calls):
        yield _event(f"{PIPELINE}.tool_call", cid, t, {"index": i, "name": call.name, "arguments": call.arguments,
                                                        "call_id": call.id, "model": o.model, "backend": o.backend}, i)
        yield _event(f"{TELEMETRY}.tool_call", cid, t, {"index": i, "name": call.name, "model": o.model,
                                                         "backend": o.backend}, i)
    if o.route == "rag":
        yield _event(f"{PIPELINE}.flow.lineage", cid, t, {
            "workspace": o.workspace, "sources": list(o.sources), "model": o.model, "backend": o.backend,
            "route": o.route, "status": o.status})
    yield _event(f"{TELEMETRY}.chat", cid, t, {
        "model": o.model, "backend": o.backend, "route": o.route, "streaming": o.streaming,
        "tokens_in": o.usage.prompt_tokens, "tokens_out": o.usage.completion_tokens,
        "latency_ms": round(o.latency_ms, 3), "ttft_ms": None if o.ttft_ms is None else round(o.ttft_ms, 3),
        "cost_usd": o.cost_usd, "status": o.status, "error": o.error, "finish_reason": o.finish_reason})


def retrieval_events(o: RetrievalOutcome) -> Iterator[Event]:
    cid, t = o.correlation_id, o.started_at
    hits = [{"document_id": h.document_id, "chunk_index": h.chunk_index, "score": h.score} for h in o.hits]
    yield _event(f"{PIPELINE}.retrieve", cid, t, {"workspace": o.workspace, "query": o.query, "mode": o.mode,
                                                  "reranked": o.reranked, "hits": hits, "latency_ms": round(o.latency_ms, 3)})
    if o.composed_prompt_chars:
        yield _event(f"{PIPELINE}.compose", cid, t, {"workspace": o.workspace, "sources": [h["document_id"] for h in hits],
                                                     "prompt_chars": o.composed_prompt_chars})
    yield _event(f"{TELEMETRY}.retrieve", cid, t, {"workspace": o.workspace, "mode": o.mode, "reranked": o.reranked,
                                                   "hits": len(hits), "latency_ms": round(o.latency_ms, 3)})


def embedding_events(o: EmbeddingOutcome) -> Iterator[Event]:
    cid, t = o.correlation_id, o.started_at
    body = {"model": o.model, "inputs": o.inputs, "tokens": o.tokens, "dimensions": o.dimensions,
            "latency_ms": round(o.latency_ms, 3), "path": o.path}
    yield _event(f"{PIPELINE}.embedding", cid, t, body)
    yield _event(f"{TELEMETRY}.embedding", cid, t, body)
