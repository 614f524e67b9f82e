"""What a worker spools is what the relay publishes: every outcome survives the round trip
through the spool record into the same events, ids included."""

from __future__ import annotations

import orjson
import pytest

from appliance.domain.events import chat_events, embedding_events, retrieval_events
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
    latency_ms=41.5, ttft_ms=9.25, cost_usd=0.0012, workspace="w", sources=("doc-a",), started_at=1_700_000_000.123456)
EMBEDDING = EmbeddingOutcome(correlation_id="c-2", model="minilm", inputs=3, tokens=17, dimensions=384,
                             latency_ms=4.0, path="grpc", started_at=1_700_000_001.5)
RETRIEVAL = RetrievalOutcome(correlation_id="c-3", workspace="w", query="why?", mode="hybrid", reranked=True,
                             hits=(RetrievedChunk("doc-a", 0, 0.9), RetrievedChunk("doc-b", 3, 0.4)), latency_ms=18.0,
                             composed_prompt_chars=420, started_at=1_700_000_002.0)


def as_json(events: object) -> list[object]:
    return [orjson.loads(orjson.dumps(e)) for e in events]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("kind", "outcome", "expand"), [
    ("chat", CHAT, chat_events), ("embedding", EMBEDDING, embedding_events), ("retrieval", RETRIEVAL, retrieval_events)])
def test_a_spooled_outcome_becomes_exactly_the_events_of_the_original(kind: str, outcome: object, expand: object) -> None:
    direct = list(expand(outcome))  # type: ignore[operator]
    relayed = events_of(kind, encode(outcome))
    assert [e.msg_id for e in relayed] == [e.msg_id for e in direct]
    assert as_json(relayed) == as_json(direct)


def test_a_chat_with_tool_calls_yields_one_tool_event_pair_per_call() -> None:
    subjects = [e.subject for e in events_of("chat", encode(CHAT))]
    assert subjects.count("pipeline.knowledge.tool_call") == 2 and subjects.count("telemetry.knowledge.tool_call") == 2
    assert "pipeline.knowledge.flow.lineage" in subjects


def test_a_record_from_another_version_is_read_with_what_it_has() -> None:
    newer = orjson.loads(encode(EMBEDDING)) | {"field_added_later": 1}
    [pipeline, _] = events_of("embedding", orjson.dumps(newer))
    assert pipeline.payload["tokens"] == 17


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'{"correlation_id": "x"}'])
def test_an_unreadable_record_raises_for_the_relay_to_count(data: bytes) -> None:
    with pytest.raises((ValueError, TypeError, KeyError)):
        events_of("embedding", data)
