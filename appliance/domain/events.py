"""Outcomes as events: which subjects a request emits, with which payload and de-duplication id.

Subjects (docs/architecture.md): `pipeline.knowledge.{chat.persist, tool_call, retrieve, compose,
flow.lineage, embedding}` and `telemetry.knowledge.{chat, tool_call, retrieve, embedding}`.
Every payload carries `schema_version`, `event_id`, `correlation_id` and `ts` (unix seconds).
`event_id` is also the `Nats-Msg-Id`: correlation id, request start (microseconds), subject
and an index where one request emits several of a subject, so a re-publish is de-duplicated
by JetStream and a redelivery is a no-op for the persister.

The functions take an outcome of records.py as it was recorded: its fields by name, JSON
values (`Recorded`, every field present). The relay expands spooled records straight from
their JSON; building the dataclasses again first cost more CPU than everything else the relay
does per event (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from appliance.domain.ports import Event

SCHEMA_VERSION: Final = 1
PIPELINE: Final = "pipeline.knowledge"
TELEMETRY: Final = "telemetry.knowledge"

Recorded = Mapping[str, Any]  # an outcome's fields by name, JSON values


def event_id(correlation_id: str, started_at: float, subject: str, index: int = 0) -> str:
    return f"{correlation_id}:{int(started_at * 1_000_000)}:{subject}:{index}"


def _event(subject: str, cid: str, started_at: float, body: dict[str, Any], index: int = 0) -> Event:
    eid = event_id(cid, started_at, subject, index)
    payload = {"schema_version": SCHEMA_VERSION, "event_id": eid, "correlation_id": cid, "ts": started_at}
    payload.update(body)
    return Event(subject, payload, eid)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def chat_events(o: Recorded) -> list[Event]:
    """A `ChatOutcome`'s events: the pair for training (successful chats only), one pair per
    tool call, the lineage of a RAG answer, and the telemetry every chat has."""
    cid, t = o["correlation_id"], o["started_at"]
    model, backend, route = o["model"], o["backend"], o["route"]
    u = o["usage"]
    tokens_in, tokens_out = u.get("prompt_tokens", 0), u.get("completion_tokens", 0)
    calls = [{"name": c["name"], "arguments": c["arguments"], "id": c.get("id")} for c in o["tool_calls"]]
    prompt = o.get("prompt")  # the prompt the gateway wrote ({name, version}), in every chat event
    events: list[Event] = []
    if o["status"] == 200:
        events.append(_event(f"{PIPELINE}.chat.persist", cid, t, {
            "model": model, "upstream_model": o["upstream_model"], "backend": backend, "route": route,
            "streaming": o["streaming"], "messages": list(o["messages"]), "response_text": o["response_text"],
            "finish_reason": o["finish_reason"], "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out},
            "workspace": o["workspace"], "sources": list(o["sources"]), "tool_calls": calls,
            "latency_ms": _ms(o["latency_ms"]), "ttft_ms": _ms(o["ttft_ms"]), "cost_usd": o["cost_usd"],
            "prompt": prompt}))
    for i, call in enumerate(calls):
        events.append(_event(f"{PIPELINE}.tool_call", cid, t, {
            "index": i, "name": call["name"], "arguments": call["arguments"], "call_id": call["id"], "model": model,
            "backend": backend}, i))
        events.append(_event(f"{TELEMETRY}.tool_call", cid, t, {
            "index": i, "name": call["name"], "model": model, "backend": backend}, i))
    if route == "rag":
        events.append(_event(f"{PIPELINE}.flow.lineage", cid, t, {
            "workspace": o["workspace"], "sources": list(o["sources"]), "model": model, "backend": backend,
            "route": route, "status": o["status"], "prompt": prompt}))
    telemetry = {
        "model": model, "backend": backend, "route": route, "streaming": o["streaming"],
        "tokens_in": tokens_in, "tokens_out": tokens_out, "latency_ms": _ms(o["latency_ms"]),
        "ttft_ms": _ms(o["ttft_ms"]), "cost_usd": o["cost_usd"], "status": o["status"], "error": o["error"],
        "finish_reason": o["finish_reason"], "prompt": prompt, "key": o.get("key")}
    # Usage (`/admin/usage`) is read from here: the caller's key name, the local backend's time.
    telemetry["key"] = o.get("key")
    telemetry["gpu_seconds"] = o.get("gpu_seconds") or 0.0
    if o.get("routing"):  # a router's choice or a fallback: only when there was one
        telemetry["routing"] = dict(o["routing"])
    events.append(_event(f"{TELEMETRY}.chat", cid, t, telemetry))
    return events


def retrieval_events(o: Recorded) -> list[Event]:
    """A `RetrievalOutcome`'s events: what was found, the prompt composed from it (when one
    was), and telemetry."""
    cid, t, workspace = o["correlation_id"], o["started_at"], o["workspace"]
    hits = [{"document_id": h["document_id"], "chunk_index": h["chunk_index"], "score": h["score"]} for h in o["hits"]]
    events = [_event(f"{PIPELINE}.retrieve", cid, t, {
        "workspace": workspace, "query": o["query"], "mode": o["mode"], "reranked": o["reranked"], "hits": hits,
        "latency_ms": _ms(o["latency_ms"])})]
    if o["composed_prompt_chars"]:
        events.append(_event(f"{PIPELINE}.compose", cid, t, {
            "workspace": workspace, "sources": [h["document_id"] for h in hits],
            "prompt_chars": o["composed_prompt_chars"]}))
    events.append(_event(f"{TELEMETRY}.retrieve", cid, t, {
        "workspace": workspace, "mode": o["mode"], "reranked": o["reranked"], "hits": len(hits),
        "latency_ms": _ms(o["latency_ms"])}))
    return events


def embedding_events(o: Recorded) -> list[Event]:
    """An `EmbeddingOutcome`'s events: one for the pipeline, one for telemetry, same body."""
    cid, t = o["correlation_id"], o["started_at"]
    body = {"model": o["model"], "inputs": o["inputs"], "tokens": o["tokens"], "dimensions": o["dimensions"],
            "latency_ms": _ms(o["latency_ms"]), "path": o["path"], "key": o.get("key")}
    return [_event(f"{PIPELINE}.embedding", cid, t, body),
            _event(f"{TELEMETRY}.embedding", cid, t, {**body, "key": o.get("key")})]
