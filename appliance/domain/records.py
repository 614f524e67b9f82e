"""What happened in a request, as values: the chat, embedding and retrieval outcomes.

The gateway hands each outcome to a `Recorder` after (or while) answering; the event
pipeline turns them into `pipeline.*` / `telemetry.*` events. Recording never blocks the
response and never raises into it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ChatOutcome:
    """One finished chat completion (streaming or not, successful or failed)."""

    correlation_id: str
    model: str                      # the name the client asked for
    upstream_model: str             # what the backend was sent
    backend: str
    route: str                      # "direct" | "rag" | "workflow"
    streaming: bool
    messages: Sequence[Mapping[str, Any]]   # the prompt as sent upstream (after RAG injection)
    response_text: str
    finish_reason: str | None
    usage: Usage
    tool_calls: Sequence[ToolCall] = ()
    latency_ms: float = 0.0
    ttft_ms: float | None = None    # time to first token (streaming), else None
    cost_usd: float = 0.0
    status: int = 200
    error: str | None = None
    workspace: str | None = None
    sources: Sequence[str] = ()     # document ids injected by RAG
    started_at: float = 0.0         # unix time
    malformed_events: int = 0       # upstream stream events skipped as unreadable
    routing: Mapping[str, Any] = field(default_factory=dict)  # a router's choice, a fallback taken
    prompt: Mapping[str, Any] | None = None  # {name, version} of the prompt the gateway wrote (RAG)
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Time the answering backend spent on the request (its call to the end of its answer), when
    # it is a local server (`Capabilities.local`): what GPU-seconds are counted in. 0 for a cloud API.
    gpu_seconds: float = 0.0
    key: str | None = None          # the API key's name (never the key), None without keys


@dataclass(frozen=True, slots=True)
class EmbeddingOutcome:
    correlation_id: str
    model: str
    inputs: int
    tokens: int
    dimensions: int
    latency_ms: float
    path: str = "local"             # "local" | "grpc"
    started_at: float = 0.0
    key: str | None = None          # the API key's name (never the key), None without keys


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    document_id: str
    chunk_index: int
    score: float


@dataclass(frozen=True, slots=True)
class RetrievalOutcome:
    correlation_id: str
    workspace: str
    query: str
    mode: str                       # "dense" | "text" | "hybrid"
    reranked: bool
    hits: Sequence[RetrievedChunk]
    latency_ms: float
    composed_prompt_chars: int = 0  # > 0 when the hits were composed into a chat prompt
    started_at: float = 0.0


class Recorder(Protocol):
    """Receives outcomes. Implementations must return at once and never raise."""

    def chat(self, outcome: ChatOutcome) -> None:
        ...

    def embedding(self, outcome: EmbeddingOutcome) -> None:
        ...

    def retrieval(self, outcome: RetrievalOutcome) -> None:
        ...


class NullRecorder:
    """Records nothing: events disabled."""

    def chat(self, outcome: ChatOutcome) -> None:
        return None

    def embedding(self, outcome: EmbeddingOutcome) -> None:
        return None

    def retrieval(self, outcome: RetrievalOutcome) -> None:
        return None


class FanoutRecorder:
    """Hands every outcome to each of several recorders; one failing does not stop the rest."""

    def __init__(self, *recorders: Recorder) -> None:
        self.recorders = recorders
        self._chat = [r.chat for r in recorders]
        self._embedding = [r.embedding for r in recorders]
        self._retrieval = [r.retrieval for r in recorders]

    def chat(self, outcome: ChatOutcome) -> None:
        _each(self._chat, outcome)

    def embedding(self, outcome: EmbeddingOutcome) -> None:
        _each(self._embedding, outcome)

    def retrieval(self, outcome: RetrievalOutcome) -> None:
        _each(self._retrieval, outcome)


def _each(receivers: Sequence[Callable[[Any], None]], outcome: object) -> None:
    for receive in receivers:
        try:
            receive(outcome)
        except Exception:  # a recorder must never break a response
            logging.getLogger(__name__).exception("recorder failed", extra={"recorder": repr(receive)})
