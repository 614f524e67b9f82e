"""What a worker spools is what the relay publishes: an outcome goes through its spool record
into the events docs/events.md documents, ids included."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from appliance.domain.records import (
    ChatOutcome,
    EmbeddingOutcome,
    RetrievalOutcome,
    RetrievedChunk,
    ToolCall,
    Usage,
)
from appliance.events.outcomes import encode, events_of

CHAT = ChatOutcome(
    correlation_id="c-1", model="coder", upstream_model="qwen", backend="vllm", route="rag", streaming=True,
    messages=[{"role": "system", "content": "[1] (doc-a) text"}, {"role": "user", "content": "why?"}],
    response_text="because", finish_reason="tool_calls", usage=Usage(12, 7),
    tool_calls=(ToolCall("lookup", '{"q": "x"}', "call_1"), ToolCall("fetch", "{}", None)),
    latency_ms=41.5, ttft_ms=9.25, cost_usd=0.0012, workspace="w", sources=("doc-a",), started_at=1_700_000_000.123456,
    prompt={"name": "rag-answer", "version": 1})
EMBEDDING = EmbeddingOutcome(correlation_id="c-2", model="minilm", inputs=3, tokens=17, dimensions=384,
                             latency_ms=4.0, path="grpc", started_at=1_700_000_001.5)
RETRIEVAL = RetrievalOutcome(correlation_id="c-3", workspace="w", query="why?", mode="hybrid", reranked=True,
                             hits=(RetrievedChunk("doc-a", 0, 0.9), RetrievedChunk("doc-b", 3, 0.4)), latency_ms=18.0,
                             composed_prompt_chars=420, started_at=1_700_000_002.0)


def relayed(kind: str, outcome: object) -> dict[str, dict[str, object]]:
    """The events a spooled outcome becomes, by event id."""
    return {e.msg_id: dict(e.payload) for e in events_of(kind, encode(outcome))}


ENVELOPE = {"schema_version": 1, "correlation_id": "c-1", "ts": 1_700_000_000.123456}


def test_a_spooled_chat_becomes_its_documented_events_ids_included() -> None:
    events = relayed("chat", CHAT)
    base = "c-1:1700000000123456"
    assert list(events) == [f"{base}:pipeline.knowledge.chat.persist:0",
                            f"{base}:pipeline.knowledge.tool_call:0", f"{base}:telemetry.knowledge.tool_call:0",
                            f"{base}:pipeline.knowledge.tool_call:1", f"{base}:telemetry.knowledge.tool_call:1",
                            f"{base}:pipeline.knowledge.flow.lineage:0", f"{base}:telemetry.knowledge.chat:0"]
    assert all(p["event_id"] == i for i, p in events.items())
    assert events[f"{base}:pipeline.knowledge.chat.persist:0"] == ENVELOPE | {
        "event_id": f"{base}:pipeline.knowledge.chat.persist:0", "model": "coder", "upstream_model": "qwen",
        "backend": "vllm", "route": "rag", "streaming": True, "messages": list(CHAT.messages),
        "response_text": "because", "finish_reason": "tool_calls", "usage": {"prompt_tokens": 12, "completion_tokens": 7},
        "workspace": "w", "sources": ["doc-a"], "tool_calls": [{"name": "lookup", "arguments": '{"q": "x"}', "id": "call_1"},
                                                               {"name": "fetch", "arguments": "{}", "id": None}],
        "latency_ms": 41.5, "ttft_ms": 9.25, "cost_usd": 0.0012, "prompt": {"name": "rag-answer", "version": 1}}
    assert events[f"{base}:pipeline.knowledge.tool_call:1"] == ENVELOPE | {
        "event_id": f"{base}:pipeline.knowledge.tool_call:1", "index": 1, "name": "fetch", "arguments": "{}",
        "call_id": None, "model": "coder", "backend": "vllm"}
    assert events[f"{base}:telemetry.knowledge.chat:0"] == ENVELOPE | {
        "event_id": f"{base}:telemetry.knowledge.chat:0", "model": "coder", "backend": "vllm", "route": "rag",
        "streaming": True, "tokens_in": 12, "tokens_out": 7, "latency_ms": 41.5, "ttft_ms": 9.25, "cost_usd": 0.0012,
        "status": 200, "error": None, "finish_reason": "tool_calls", "prompt": {"name": "rag-answer", "version": 1},
        "key": None, "gpu_seconds": 0.0}
    assert events[f"{base}:pipeline.knowledge.flow.lineage:0"]["prompt"] == {"name": "rag-answer", "version": 1}


def test_a_chat_spooled_before_prompts_were_recorded_still_expands() -> None:
    old = orjson.loads(encode(CHAT))
    del old["prompt"]
    events = events_of("chat", orjson.dumps(old))
    assert {e.payload["prompt"] for e in events if "prompt" in e.payload} == {None}


def test_a_failed_chat_has_telemetry_but_no_training_pair() -> None:
    failed = dataclasses.replace(CHAT, status=502, error="upstream down", tool_calls=(), route="direct")
    [telemetry] = relayed("chat", failed).values()
    assert (telemetry["status"], telemetry["error"]) == (502, "upstream down")


def test_spooled_embedding_and_retrieval_outcomes_become_their_events() -> None:
    embedding = list(relayed("embedding", EMBEDDING).values())
    assert [e["event_id"] for e in embedding] == ["c-2:1700000001500000:pipeline.knowledge.embedding:0",
                                                  "c-2:1700000001500000:telemetry.knowledge.embedding:0"]
    assert {k: embedding[0][k] for k in ("model", "inputs", "tokens", "dimensions", "latency_ms", "path")} == {
        "model": "minilm", "inputs": 3, "tokens": 17, "dimensions": 384, "latency_ms": 4.0, "path": "grpc"}
    retrieve, compose, telemetry = relayed("retrieval", RETRIEVAL).values()
    assert retrieve["hits"] == [{"document_id": "doc-a", "chunk_index": 0, "score": 0.9},
                                {"document_id": "doc-b", "chunk_index": 3, "score": 0.4}]
    assert (compose["sources"], compose["prompt_chars"]) == (["doc-a", "doc-b"], 420)
    assert (telemetry["hits"], telemetry["mode"], telemetry["reranked"]) == (2, "hybrid", True)
    uncomposed = dataclasses.replace(RETRIEVAL, composed_prompt_chars=0)
    assert [p["event_id"].split(":")[2] for p in relayed("retrieval", uncomposed).values()] == [
        "pipeline.knowledge.retrieve", "telemetry.knowledge.retrieve"]


def test_a_chat_with_tool_calls_yields_one_tool_event_pair_per_call() -> None:
    subjects = [e.subject for e in events_of("chat", encode(CHAT))]
    assert subjects.count("pipeline.knowledge.tool_call") == 2 and subjects.count("telemetry.knowledge.tool_call") == 2
    assert "pipeline.knowledge.flow.lineage" in subjects


def test_a_record_from_another_version_is_read_with_what_it_has() -> None:
    newer = orjson.loads(encode(EMBEDDING)) | {"field_added_later": 1}
    [pipeline, _] = events_of("embedding", orjson.dumps(newer))
    assert pipeline.payload["tokens"] == 17
    older = {k: v for k, v in orjson.loads(encode(CHAT)).items() if k not in ("ttft_ms", "sources", "workspace")}
    persist = events_of("chat", orjson.dumps(older))[0].payload
    assert (persist["sources"], persist["workspace"], persist["response_text"]) == ([], None, "because")


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'{"correlation_id": "x"}'])
def test_an_unreadable_record_raises_for_the_relay_to_count(data: bytes) -> None:
    with pytest.raises((ValueError, TypeError, KeyError)):
        events_of("embedding", data)
